/// What [`EarlyStopping::update`] decided about an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A new best score: keep these weights.
    Improved,
    /// No improvement, but patience remains.
    Waiting,
    /// No improvement for `patience` epochs: stop.
    Stop,
}

/// Stops training when a validation score (higher is better) has not improved by more than
/// `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    best: Option<f64>,
    epochs_without_improvement: usize,
}

impl EarlyStopping {
    /// A new tracker.
    pub fn new(patience: usize, min_delta: f64) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            best: None,
            epochs_without_improvement: 0,
        }
    }

    /// The best score seen.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Records one epoch's score. A NaN score never counts as an improvement.
    pub fn update(&mut self, score: f64) -> Progress {
        let improved = match self.best {
            None => !score.is_nan(),
            Some(best) => score > best + self.min_delta,
        };
        if improved {
            self.best = Some(score);
            self.epochs_without_improvement = 0;
            Progress::Improved
        } else {
            self.epochs_without_improvement += 1;
            if self.epochs_without_improvement >= self.patience {
                Progress::Stop
            } else {
                Progress::Waiting
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_table() {
        use Progress::*;
        let cases: [(&str, usize, &[f64], &[Progress]); 4] = [
            (
                "rising scores",
                2,
                &[0.5, 0.6, 0.7],
                &[Improved, Improved, Improved],
            ),
            (
                "plateau stops after patience",
                2,
                &[0.5, 0.5, 0.5],
                &[Improved, Waiting, Stop],
            ),
            (
                "a late gain resets patience",
                2,
                &[0.5, 0.4, 0.6, 0.6, 0.55],
                &[Improved, Waiting, Improved, Waiting, Stop],
            ),
            (
                "NaN is never a gain",
                3,
                &[f64::NAN, 0.5, f64::NAN],
                &[Waiting, Improved, Waiting],
            ),
        ];
        for (name, patience, scores, expected) in cases {
            let mut stopper = EarlyStopping::new(patience, 0.0);
            let got: Vec<Progress> = scores.iter().map(|&s| stopper.update(s)).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn min_delta_ignores_tiny_gains() {
        let mut stopper = EarlyStopping::new(1, 0.01);
        assert_eq!(stopper.update(0.90), Progress::Improved);
        assert_eq!(stopper.update(0.905), Progress::Stop);
        assert_eq!(stopper.best(), Some(0.90));
    }
}
