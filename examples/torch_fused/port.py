"""Stand-in for a PyTorch port (the candidate side of a real port): an ``nn.Module``, channels first.

Patches are (B, C, N, N), offsets (B, C, 1, 2), the probe (1, 1, 1, N, N), and the far field's
FFT and modulus are one method. Only the object/probe/offset forward (the ``physics`` pipeline) is
here. Nothing in this file knows about the parity harness; ``adapter.py`` wraps it.
"""

import torch
from torch import nn


class ForwardModel(nn.Module):
    def __init__(self, n=64, gridsize=2, offset=4, buffer=10, probe_mask=False, intensity_scale=1.0,
                 dtype=torch.float32):
        super().__init__()
        self.n, self.channels, self.dtype = n, gridsize * gridsize, dtype
        size = n + (gridsize - 1) * offset + buffer
        self.size = size + 1 if (size - n) % 2 else size
        self.pad = (self.size - n) // 2
        self.intensity_scale, self.probe_mask = intensity_scale, probe_mask
        centre = torch.zeros(self.size, self.size, dtype=dtype)
        centre[self.pad + n // 4 : self.pad + 3 * n // 4, self.pad + n // 4 : self.pad + 3 * n // 4] = 1
        self.register_buffer("centre", centre)
        yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        disk = (yy - (n / 2 - 0.5)) ** 2 + (xx - (n / 2 - 0.5)) ** 2 < (n // 4) ** 2
        self.register_buffer("disk", disk.to(dtype))

    @staticmethod
    def shift(images, shifts, top=0, left=0, rows=None, cols=None):
        """images (K, H, W) real, shifts (K, 2) = (dx, dy): bilinear, content moves by +shift, zeros outside."""
        k, height, width = images.shape
        rows, cols = rows or height, cols or width
        padded = nn.functional.pad(images, (1, 1, 1, 1))
        whole = torch.floor(shifts)
        frac = shifts - whole
        whole = whole.long()
        y = torch.arange(top, top + rows, device=images.device)[None] - whole[:, 1:2]
        x = torch.arange(left, left + cols, device=images.device)[None] - whole[:, 0:1]
        batch = torch.arange(k, device=images.device)[:, None, None]

        def pick(dy, dx):  # indices clipped onto the zero border read zero
            return padded[batch, (y + dy).clamp(0, height + 1)[:, :, None], (x + dx).clamp(0, width + 1)[:, None, :]]

        fx, fy = frac[:, 0, None, None], frac[:, 1, None, None]
        upper = fx * pick(0, 0) + (1 - fx) * pick(0, 1)
        lower = fx * pick(1, 0) + (1 - fx) * pick(1, 1)
        return fy * upper + (1 - fy) * lower

    def shift_complex(self, images, shifts, **window):
        return torch.complex(self.shift(images.real, shifts, **window), self.shift(images.imag, shifts, **window))

    def centred(self, offsets):
        """(B, C, 1, 2) -> (B*C, 2) minus each group's mean, summed channel by channel."""
        grouped = offsets[:, :, 0, :]
        total = grouped[:, 0]
        for channel in range(1, self.channels):
            total = total + grouped[:, channel]
        return (grouped - (total / self.channels)[:, None]).reshape(-1, 2)

    def reassemble(self, patches, offsets):
        b, c = patches.shape[:2]
        shifts = -self.centred(offsets)
        padded = nn.functional.pad(patches, (self.pad,) * 4).reshape(b * c, self.size, self.size)
        placed = self.shift_complex(padded, shifts).reshape(b, c, self.size, self.size)
        counts = self.shift(self.centre.expand(b * c, -1, -1), shifts).reshape(b, c, self.size, self.size)
        numerator, denominator = placed[:, 0], counts[:, 0]
        for channel in range(1, c):
            numerator, denominator = numerator + placed[:, channel], denominator + counts[:, channel]
        denominator = denominator + 0.001
        return torch.complex(numerator.real / denominator, numerator.imag / denominator)[:, None]

    def extract(self, canvas, offsets):
        b = canvas.shape[0]
        repeated = canvas[:, 0].repeat_interleave(self.channels, dim=0)
        crops = self.shift_complex(repeated, self.centred(offsets), top=self.pad, left=self.pad, rows=self.n,
                                   cols=self.n)
        return crops.reshape(b, self.channels, self.n, self.n)

    def illuminate(self, probe, patches):
        wave = probe[0] * patches
        return torch.complex(wave.real * self.disk, wave.imag * self.disk) if self.probe_mask else wave

    def diffract(self, wave):
        """|FFT2(wave) / N|, centred: FFT and modulus in one step."""
        spectrum = torch.fft.fft2(wave)
        spectrum = torch.complex(spectrum.real * (1.0 / self.n), spectrum.imag * (1.0 / self.n))
        return torch.sqrt(torch.fft.fftshift(spectrum.real**2 + spectrum.imag**2, dim=(-2, -1)))

    def forward(self, patches, offsets, probe):
        canvas = self.reassemble(patches, offsets)
        amplitude = self.diffract(self.illuminate(probe, self.extract(canvas, offsets)))
        return self.intensity_scale * amplitude
