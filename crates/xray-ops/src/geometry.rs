//! The shape of one convolution: batch, channels, input plane, square kernel, stride and
//! symmetric padding (dilation 1). The depthwise kernels (CPU and CUDA) and the dense
//! convolution's column matrices all read it.

/// Shapes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output positions `o` whose input position `o * stride + k - padding` lies in `0..len`.
    pub fn valid(&self, k: usize, len: usize, out: usize) -> std::ops::Range<usize> {
        let first = self
            .padding
            .saturating_sub(k)
            .div_ceil(self.stride)
            .min(out);
        let end = (len + self.padding)
            .checked_sub(k + 1)
            .map_or(0, |last| last / self.stride + 1)
            .min(out);
        first..end.max(first)
    }

    /// Input position of output position `o` through kernel offset `k` (valid `o` only).
    pub fn input(&self, o: usize, k: usize) -> usize {
        o * self.stride + k - self.padding
    }
}
