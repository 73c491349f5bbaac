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

/// Which way a score improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (ROC AUC, accuracy).
    Maximize,
    /// Lower is better (a loss).
    Minimize,
}

/// Stops training when a validation score has not improved by more than `min_delta` for
/// `patience` epochs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    direction: Direction,
    best: Option<f64>,
    epochs_without_improvement: usize,
}

impl EarlyStopping {
    /// A new tracker of a score where higher is better.
    pub fn new(patience: usize, min_delta: f64) -> Self {
        Self::with_direction(patience, min_delta, Direction::Maximize)
    }

    /// A new tracker of a score that improves in `direction`.
    pub fn with_direction(patience: usize, min_delta: f64, direction: Direction) -> Self {
        EarlyStopping {
            patience,
            min_delta,
            direction,
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
            Some(best) => match self.direction {
                Direction::Maximize => score > best + self.min_delta,
                Direction::Minimize => score < best - self.min_delta,
            },
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
