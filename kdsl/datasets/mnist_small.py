"""A small real dataset shipped inside kdsl: 2,000 training and 500 test images drawn from MNIST.

For trying kdsl with no download (`kdsl train examples/mnist_mlp.kd` trains on it); drawn as
`kdsl.datasets.sample` says.
"""

from kdsl.datasets.sample import Sample

DATASET = Sample("mnist_small.npz")
load_data = DATASET.load_data
