"""FFT and overlap-add on JAX (``jnp.fft``); the shared ``fft_corr`` does the geometry."""

from __future__ import annotations


class TransformMixin:
    """FFT primitives and overlap-add of :class:`~convkit.backends.jax.JaxBackend`."""

    def next_fast_len(self, n: int, real: bool) -> int:
        from convkit.choose import fast_len

        return fast_len(n)

    def linear_conv(self, x, wf, sizes, axes, real: bool, method: str, keep: tuple | None = None):
        if method == "oa":
            blocks = _oa_blocks(x.shape, wf.shape, axes)
            if blocks:
                out = self._overlap_add(x, wf, axes, blocks, real)
                return out if keep is None else out[keep]
        return super().linear_conv(x, wf, sizes, axes, real, method, keep=keep)

    def _overlap_add(self, x, wf, axes, blocks: dict, real: bool):
        """Full linear convolution over ``axes``, blocked on the axes in ``blocks`` (axis -> FFT size).

        The input is cut into blocks of ``step = f - m + 1`` samples, each block is
        transformed with length ``f`` (the kernel once), and the block results are added
        with their ``m - 1`` overlap. Axes not in ``blocks`` get one transform of full length.
        """
        jnp = self.xp
        shape, fft_axes, fsizes, wshape = [], [], [], []
        oa = []  # (position of the block-count axis in the blocked array, step, m)
        for a in range(x.ndim):
            n, m = x.shape[a], wf.shape[a]
            if a in blocks:
                f = blocks[a]
                step = f - m + 1
                nb = -(-n // step)
                if nb * step != n:
                    widths = [(0, 0)] * x.ndim
                    widths[a] = (0, nb * step - n)
                    x = jnp.pad(x, widths)
                oa.append((len(shape), step, m))
                shape += [nb, step]
                wshape += [1, m]
                fft_axes.append(len(shape) - 1)
                fsizes.append(f)
            else:
                shape.append(n)
                wshape.append(m)
                if a in axes:
                    fft_axes.append(len(shape) - 1)
                    fsizes.append(self.next_fast_len(n + m - 1, real))
        xb = jnp.reshape(x, shape)
        wb = jnp.reshape(wf, wshape)
        if real:
            spec = jnp.fft.rfftn(xb, s=fsizes, axes=fft_axes) * jnp.fft.rfftn(wb, s=fsizes, axes=fft_axes)
            y = jnp.fft.irfftn(spec, s=fsizes, axes=fft_axes)
        else:
            spec = jnp.fft.fftn(xb, s=fsizes, axes=fft_axes) * jnp.fft.fftn(wb, s=fsizes, axes=fft_axes)
            y = jnp.fft.ifftn(spec, s=fsizes, axes=fft_axes)
        for pos, step, m in reversed(oa):  # later axes first: earlier positions stay valid
            y = _overlap(y, pos, step, m)
        return y



def _oa_blocks(x_shape, k_shape, axes) -> dict:
    """Overlap-add block FFT size per axis, for axes where the input is much longer than the
    kernel (the rule of :func:`convkit.choose._oa_cost`)."""
    from convkit.choose import fast_len

    out = {}
    for a in axes:
        n, m = x_shape[a], k_shape[a]
        if n > 8 * m and m > 1:
            out[a] = fast_len(max(8 * m, 64))
    return out


def _overlap(y, pos: int, step: int, m: int):
    """Add blocks ``y[..., b, :]`` (axis ``pos`` = block, ``pos+1`` = f samples) at offsets ``b*step``."""
    import jax.numpy as jnp

    y = jnp.moveaxis(y, (pos, pos + 1), (-2, -1))
    nb = y.shape[-2]
    head, tail = y[..., :step], y[..., step:step + m - 1]
    if m > 1 and nb > 1:
        head = head.at[..., 1:, : m - 1].add(tail[..., :-1, :])
    flat = jnp.reshape(head, head.shape[:-2] + (nb * step,))
    flat = jnp.concatenate([flat, tail[..., -1, :]], axis=-1)
    return jnp.moveaxis(flat, -1, pos)


