/// Learning rate per optimiser step: linear warm-up from `base / warmup_steps`, then a cosine
/// decay to `final_fraction * base` at the last step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Learning rate at the end, as a fraction of `base`.
    pub final_fraction: f64,
}

impl LrSchedule {
    /// The learning rate for optimiser step `step` (0-based).
    ///
    /// ```
    /// let s = xray_train::LrSchedule { base: 1.0, warmup_steps: 10, total_steps: 110, final_fraction: 0.0 };
    /// assert!((s.at(0) - 0.1).abs() < 1e-12);
    /// assert!((s.at(9) - 1.0).abs() < 1e-12);
    /// assert!((s.at(60) - 0.5).abs() < 1e-12);
    /// ```
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let floor = self.final_fraction * self.base;
        floor + (self.base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
