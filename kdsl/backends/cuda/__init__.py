"""The CUDA target: the CPU target's fused kernel groups as Numba CUDA kernels, run by a host-side runner.

Everything here but `launch` imports `numba.cuda`; `kdsl.backends.compiled` imports this
package only when `target="cuda"` is asked for, after `kdsl.devices.require_cuda` passed.
"""
