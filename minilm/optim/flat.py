"""All parameters, and all their gradients, as views into one contiguous buffer each.

Why: an optimizer step over a GPT touches a few hundred parameter arrays. Run per
parameter, that is a few hundred kernel launches on a GPU (or a few thousand small NumPy
calls), and each array is too small to keep the hardware busy. Laid out end to end, the
whole update is one pass over one long vector: one fused kernel on the GPU, and on the
CPU a loop over cache-sized chunks in which the temporaries never leave the cache.

    buffer:  | wte ........ | wpe .. | h.0.ln_1.weight | ... |    (group 0, then group 1, ...)
    p.data   = buffer[start:end].reshape(p.shape)    (a view: the model sees the same memory)
    p.grad   = grads[start:end].reshape(p.shape)     (backward accumulates into it in place)

Parameters are laid out group by group, so each parameter group (its own lr, weight decay)
is one contiguous range of the buffer.

Code elsewhere may replace `p.data` or `p.grad` with new arrays (`p.grad = None` from a
module's zero_grad, a user assigning weights). `attach()` notices, copies the new values
into the buffer and points the parameter back at its view, so the buffer never goes stale.
"""

from __future__ import annotations

from ..autograd import Tensor


class FlatParameters:
    def __init__(self, param_groups: list[dict]):
        params = [p for group in param_groups for p in group["params"]]
        first = params[0]
        for p in params:
            if p.device != first.device or p.dtype != first.dtype:
                raise ValueError(
                    "flat=True keeps all parameters in one buffer, so they need one device and one dtype; "
                    f"found a parameter of shape {first.shape} ({first.dtype} on {first.device.name}) and one of "
                    f"shape {p.shape} ({p.dtype} on {p.device.name})")
        xp = first.device.xp
        self.params = params
        self.size = sum(p.size for p in params)
        self.data = xp.empty(self.size, dtype=first.dtype)
        self.grads = xp.zeros(self.size, dtype=first.dtype)
        self.ranges: list[tuple[int, int]] = []  # per parameter, [start, end) in the buffers
        start = 0
        for p in params:
            self.ranges.append((start, start + p.size))
            start += p.size
        self._data_views = [self.view(self.data, i) for i in range(len(params))]
        self._grad_views = [self.view(self.grads, i) for i in range(len(params))]
        self._grad_tensors = [Tensor(view) for view in self._grad_views]
        for p, view in zip(params, self._data_views):
            view[...] = p.data
            p.data = view
        self.attach()

    def view(self, flat, index: int):
        """Parameter `index`'s slice of a flat array laid out like the buffer (optimizer state)."""
        start, end = self.ranges[index]
        return flat[start:end].reshape(self.params[index].shape)

    def attach(self) -> None:
        """Point every parameter's `.data` and `.grad` at their views again, copying in any
        values that were assigned in the meantime. A parameter whose gradient was set to
        None counts as having a zero gradient."""
        for p, data_view, grad_view, grad_tensor in zip(self.params, self._data_views, self._grad_views,
                                                         self._grad_tensors):
            if p.data is not data_view:
                if p.data.shape != data_view.shape:
                    raise ValueError(f"a parameter of shape {data_view.shape} was given data of shape {p.data.shape}")
                data_view[...] = p.data
                p.data = data_view
            grad = p.grad
            if grad is grad_tensor and grad.data is grad_view:
                continue
            if grad is None:
                grad_view[...] = 0
            else:
                grad_view[...] = grad.data
            grad_tensor.data = grad_view
            grad_tensor._version += 1
            p.grad = grad_tensor

    def zero_grad(self) -> None:
        """One fill over the whole gradient buffer; every `.grad` stays a view into it."""
        self.grads[...] = 0
        self.attach()
