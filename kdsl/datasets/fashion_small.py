"""A small real dataset shipped inside kdsl: 2,000 training and 500 test images drawn from Fashion-MNIST.

For trying kdsl with no download (`kdsl train examples/fashion_mlp.kd` trains on it); drawn as
`kdsl.datasets.sample` says. Labels: 0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat, 5 sandal,
6 shirt, 7 sneaker, 8 bag, 9 ankle boot. Fashion-MNIST is Zalando's (H. Xiao, K. Rasul, R. Vollgraf,
arXiv:1708.07747, 2017), released under the MIT License.
"""

from kdsl.datasets.sample import Sample

DATASET = Sample("fashion_small.npz")
load_data = DATASET.load_data
