"""Array backends: NumPy on the CPU, CuPy on a CUDA GPU, behind one small `Device` object.

Everything above this module asks a device for `xp` (the array module) and for the few
things the two array libraries do differently. No other module imports cupy or tests
"is this cupy?": they call the device. (Chainer's `Device` / `xp` idiom.)
"""

from __future__ import annotations

import copy
import os
import threading

import numpy as np

from . import allocator, parallel, special

# Keep freed memory for reuse (glibc's mmap/trim thresholds; MINILM_MALLOC_POLICY=0 turns it
# off): without it every large temporary of a training step is a fresh, zero-filled mmap.
allocator.apply_policy()
# OpenBLAS on one thread, minilm's threads splitting the large GEMMs (MINILM_THREADED_GEMM=0
# turns it off): idle OpenBLAS workers spin and would take the second core from the rest.
parallel.take_over_blas()


class BackendError(RuntimeError):
    """A backend or device was asked for that is not usable here."""


def _rows_by_index(target, indices, values) -> bool:
    """Whether `target[indices] += values` picks whole rows of a contiguous float array by one
    array (of target's library) of non-negative row numbers, an embedding's gradient, where
    scatter_add's deterministic path applies."""
    return (isinstance(indices, type(target)) and indices.dtype.kind in "iu" and indices.size > 0
            and target.dtype.kind == "f" and target.flags.c_contiguous and target.ndim >= 2
            and values.shape == indices.shape + target.shape[1:] and int(indices.min()) >= 0)


class Device:
    """One place where arrays live. Subclasses fill in the library-specific parts."""

    name: str
    xp = np

    def __repr__(self) -> str:
        return f"device(type='{self.name}')"

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # -- array creation and transfer ------------------------------------------------
    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    # -- the places where NumPy and CuPy differ -------------------------------------
    def scatter_add(self, target, indices, values) -> None:
        """target[indices] += values, adding repeated indices up (embedding gradients). The
        sums come out the same on every run, in the same order: no atomic adds."""
        xp = self.xp
        if not _rows_by_index(target, indices, values):
            xp.add.at(target, indices, values)
            return
        # np.add.at sums repeats correctly but costs ~2.5 us a row (CuPy's uses atomic adds,
        # whose order, and so whose rounding, changes from run to run). Plain `+=` through a
        # fancy index is ~20x faster, and right for the rows whose index occurs only once. The
        # few repeated indices (padding, frequent tokens) have their rows summed by a one-hot
        # matrix product first. An embedding backward of 1024 tokens: 2.6 ms -> 0.3 ms.
        flat = indices.reshape(-1)  # [n]
        rows = values.reshape(flat.size, -1)  # [n, D]
        target_rows = target.reshape(target.shape[0], -1)  # [V, D], a view
        once = xp.bincount(flat, minlength=target.shape[0])[flat] == 1  # [n]
        target_rows[flat[once]] += rows[once]
        if not bool(once.all()):
            repeated, slot = xp.unique(flat[~once], return_inverse=True)  # [U] ids, [r] their slot
            one_hot = xp.zeros((repeated.size, slot.size), dtype=self._row_sum_dtype(rows.dtype))  # [U, r]
            one_hot[slot.reshape(-1), xp.arange(slot.size)] = 1
            target_rows[repeated] += parallel.matmul(one_hot, rows[~once].astype(one_hot.dtype, copy=False))  # [U, D]

    def _row_sum_dtype(self, dtype):
        """The dtype scatter_add sums repeated rows in: float16 rows in float32 (NumPy has no
        float16 GEMM), others as they are."""
        return np.dtype(np.float32) if dtype == np.float16 else dtype

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def keep_mask(self, shape, drop_probability: float):
        """A bool array of `shape`, each entry False with probability `drop_probability`
        (dropout's mask). Each entry compares one raw 32-bit draw with a threshold: twice as
        fast as drawing float32 uniforms (NumPy's Generator makes those one call at a time),
        and finer (p in steps of 2^-32 rather than 2^-24)."""
        count = int(np.prod(shape))
        raw = self.rng.bit_generator.random_raw((count + 1) // 2).view(np.uint32)[:count]  # 2 per 64-bit draw
        threshold = np.uint32(min(round(drop_probability * 2.0**32), 2**32 - 1))
        return (raw >= threshold).reshape(shape)

    def copy_rng(self, rng):
        """An independent generator in `rng`'s state: it draws the numbers `rng` will draw next
        (activation checkpointing replays dropout with one)."""
        return copy.deepcopy(rng)

    def erf(self, x):
        """The error function, elementwise, in x's dtype."""
        return special.erf(x)  # NumPy has none: a vectorised piecewise polynomial

    def normal_cdf(self, x, times_x: bool = False):
        """Phi(x) = (1 + erf(x / sqrt 2)) / 2 elementwise; with times_x, (Phi(x), x Phi(x))."""
        return special.normal_cdf(x, times_x=times_x)  # float32: one branch-free formula

    def gelu(self, x):
        """x Phi(x), the exact GELU, when Phi(x) need not be kept for a backward."""
        return special.gelu(x)

    def gelu_grad(self, x, cdf, gy):
        """gy * (Phi(x) + x phi(x)): the exact GELU's input gradient, given Phi(x)."""
        return special.gelu_grad(x, cdf, gy)

    def synchronize(self) -> None:
        """Wait until queued work is done (a no-op on the CPU)."""

    def memory_info(self) -> dict:
        """Bytes held by the device's memory pool (empty on the CPU, where NumPy uses malloc)."""
        return {}

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, beta1, beta2, step_size, inv_sqrt_bias2, eps, decay) -> bool:
        """One fused Adam update in place, where the device has a kernel for it:
            m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = p decay - step_size m / (sqrt(v) inv_sqrt_bias2 + eps)
        Returns False when it has none (the optimizer then runs its array code)."""
        return False


class CPUDevice(Device):
    name = "cpu"
    xp = np

    def __init__(self):
        self.rng = np.random.default_rng()


class CUDADevice(Device):
    """CuPy on the current CUDA GPU. Created only when asked for, so CPU users never import cupy."""

    name = "cuda"

    def __init__(self):
        try:
            import cupy
        except ImportError as error:
            raise BackendError(
                "the 'cupy' backend needs CuPy, which is not installed: "
                "pip install 'minilm[gpu]' (cupy-cuda12x) on a machine with a CUDA GPU"
            ) from error
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # CUDA driver missing or broken
            raise BackendError(f"the 'cupy' backend needs a CUDA GPU, but CUDA reports: {error}") from error
        if count == 0:
            raise BackendError("the 'cupy' backend needs a CUDA GPU, and none is present")
        self.xp = cupy
        self._adam_kernel = None
        self.rng = cupy.random.default_rng()

    def asarray(self, data, dtype=None):
        return self.xp.asarray(data, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        return array.get() if hasattr(array, "get") else np.asarray(array)

    def _row_sum_dtype(self, dtype):
        # float64 products: with CUPY_TF32=1 a float32 GEMM would round the gradients to TF32.
        return np.dtype(np.float64)

    def erf(self, x):
        import cupyx.scipy.special

        # CuPy's erf has float32 and float64 loops only; it would return float16 input as float64.
        work = x.astype(np.float32) if x.dtype == np.float16 else x
        return cupyx.scipy.special.erf(work).astype(x.dtype, copy=False)

    def normal_cdf(self, x, times_x: bool = False):
        cdf = self.erf(x * special._INV_SQRT_2)
        cdf += 1
        cdf *= 0.5
        return (cdf, cdf * x) if times_x else cdf

    def gelu(self, x):
        return self.normal_cdf(x, times_x=True)[1]

    def gelu_grad(self, x, cdf, gy):
        return gy * (cdf + x * self.xp.exp(-0.5 * x * x) * special._INV_SQRT_2PI)

    def seed(self, seed: int) -> None:
        self.xp.random.seed(seed)
        self.rng = self.xp.random.default_rng(seed)

    def keep_mask(self, shape, drop_probability: float):
        return self.rng.random(shape, dtype=np.float32) >= drop_probability

    def copy_rng(self, rng):
        # A CuPy Generator holds a lock (so no deepcopy) and its cuRAND states in one device
        # array, `bit_generator._state`: the copy shares nothing but the seed sequence.
        bits = copy.copy(rng.bit_generator)
        bits._state = rng.bit_generator._state.copy()
        bits.lock = threading.Lock()
        return self.xp.random.Generator(bits)

    def synchronize(self) -> None:
        self.xp.cuda.Stream.null.synchronize()

    def memory_info(self) -> dict:
        """CuPy's pool: bytes in live arrays ("used") and bytes reserved from the driver ("total")."""
        pool = self.xp.get_default_memory_pool()
        return {"used_bytes": int(pool.used_bytes()), "total_bytes": int(pool.total_bytes())}

    def adam_step(self, param, grad, exp_avg, exp_avg_sq, beta1, beta2, step_size, inv_sqrt_bias2, eps, decay) -> bool:
        # One kernel launch per parameter instead of about ten: at GPU speeds the
        # optimizer is bound by launches and memory passes, not arithmetic.
        if self._adam_kernel is None:
            self._adam_kernel = self.xp.ElementwiseKernel(
                "T g, float64 b1, float64 b2, float64 step_size, float64 inv_sqrt_bias2, float64 eps, float64 decay",
                "T p, T m, T v",
                """
                m = (T)(b1 * m + (1.0 - b1) * g);
                v = (T)(b2 * v + (1.0 - b2) * g * g);
                p = (T)(p * decay - step_size * m / (sqrt((double)v) * inv_sqrt_bias2 + eps));
                """,
                "minilm_adam_step",
            )
        self._adam_kernel(grad, beta1, beta2, step_size, inv_sqrt_bias2, eps, decay, param, exp_avg, exp_avg_sq)
        return True


_DEVICE_CLASSES = {"cpu": CPUDevice, "numpy": CPUDevice, "cuda": CUDADevice, "cupy": CUDADevice, "gpu": CUDADevice}
_devices: dict[str, Device] = {}
_default_device_name = "cpu"


def get_device(name: str | Device | None = None) -> Device:
    """The device called `name` ('cpu'/'numpy' or 'cuda'/'cupy'); None gives the default one."""
    if isinstance(name, Device):
        return name
    if name is None:
        name = _default_device_name
    key = str(name).lower().split(":")[0]
    if key not in _DEVICE_CLASSES:
        raise BackendError(f"unknown device or backend {name!r}; expected 'cpu'/'numpy' or 'cuda'/'cupy'")
    canonical = _DEVICE_CLASSES[key].name if key in ("cpu", "numpy") else "cuda"
    if canonical not in _devices:
        _devices[canonical] = _DEVICE_CLASSES[key]()
    return _devices[canonical]


def device_of(array) -> Device:
    """The device that holds `array` (NumPy arrays are on the CPU, anything else on CUDA)."""
    if isinstance(array, (np.ndarray, np.generic)):
        return _CPU
    return get_device("cuda")


def array_module(array):
    """NumPy or CuPy, whichever holds `array` (the hot path of every op, so kept short)."""
    return np if isinstance(array, np.ndarray) else device_of(array).xp


def set_backend(name: str) -> Device:
    """Make new tensors live on `name` by default: 'numpy' (CPU) or 'cupy' (CUDA GPU)."""
    global _default_device_name
    device = get_device(name)
    _default_device_name = device.name
    return device


def default_device() -> Device:
    return get_device(None)


def manual_seed(seed: int) -> None:
    """Seed the random generators of every backend that is in use (and NumPy's CPU one)."""
    get_device("cpu").seed(seed)
    for device in list(_devices.values()):
        device.seed(seed)


_CPU = get_device("cpu")

if os.environ.get("MINILM_BACKEND"):
    set_backend(os.environ["MINILM_BACKEND"])
