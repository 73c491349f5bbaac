//! Gradients only where the graph needs them.

use candle_core::{Result, Tensor};

/// `gradient()` if candle tracks `argument` (a variable, or computed from one), else `None`.
///
/// candle asks every op for the gradients of all its arguments and adds each into a fresh
/// zero tensor, whether or not anything reads it: the input image of a network's first
/// convolution, or a frozen weight. Returning `None` skips both the computation and that
/// accumulation.
pub(crate) fn if_tracked(
    argument: &Tensor,
    gradient: impl FnOnce() -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    if argument.track_op() {
        gradient().map(Some)
    } else {
        Ok(None)
    }
}
