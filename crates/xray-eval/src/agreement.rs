//! Agreement between two readers of the same films (a radiologist and the model).

/// A 2x2 table of two raters' binary calls: `counts[a][b]` films called `a` by the first rater
/// and `b` by the second (0 normal, 1 pneumonia).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct AgreementTable {
    /// The counts.
    pub counts: [[u64; 2]; 2],
}

impl AgreementTable {
    /// Adds one film.
    pub fn add(&mut self, first_positive: bool, second_positive: bool) {
        self.counts[first_positive as usize][second_positive as usize] += 1;
    }

    /// Films counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Share of films both raters called alike; `None` for an empty table.
    pub fn observed_agreement(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| (self.counts[0][0] + self.counts[1][1]) as f64 / n as f64)
    }

    /// Cohen's kappa: agreement beyond what the raters' own call rates give by chance,
    /// `(p_o - p_e) / (1 - p_e)`. `None` for an empty table or when chance agreement is total
    /// (both raters call one class only), where kappa is undefined.
    ///
    /// ```
    /// let mut t = xray_eval::AgreementTable::default();
    /// for _ in 0..40 { t.add(true, true); }
    /// for _ in 0..50 { t.add(false, false); }
    /// for _ in 0..10 { t.add(true, false); }
    /// assert!((t.cohen_kappa().unwrap() - 0.8).abs() < 0.01);
    /// ```
    pub fn cohen_kappa(&self) -> Option<f64> {
        let n = self.total() as f64;
        let p_o = self.observed_agreement()?;
        let first = |c: usize| (self.counts[c][0] + self.counts[c][1]) as f64 / n;
        let second = |c: usize| (self.counts[0][c] + self.counts[1][c]) as f64 / n;
        let p_e = first(0) * second(0) + first(1) * second(1);
        (p_e < 1.0).then(|| (p_o - p_e) / (1.0 - p_e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappa_matches_a_worked_example_and_its_limits() {
        // Worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o 0.7, p_e 0.5, kappa 0.4.
        let table = AgreementTable {
            counts: [[15, 10], [5, 20]],
        };
        assert!((table.cohen_kappa().unwrap() - 0.4).abs() < 1e-12);
        let perfect = AgreementTable {
            counts: [[7, 0], [0, 3]],
        };
        assert_eq!(perfect.cohen_kappa(), Some(1.0));
        assert_eq!(AgreementTable::default().cohen_kappa(), None);
        let one_class = AgreementTable {
            counts: [[0, 0], [0, 9]],
        };
        assert_eq!(one_class.cohen_kappa(), None);
    }
}
