//! Per-problem bookkeeping: which sample indices are judged, in flight, or still needed, and
//! whether the stopping rule has decided the problem.
//!
//! PassUntil decides a problem when samples `0..K` are all judged and the K-th is the r-th
//! success, or when `0..cap` are judged with fewer than r. Samples judged beyond `K` (they
//! were in flight) are kept but never counted, so the outcome depends on the samples alone,
//! not on batch sizes, thread counts or interruptions.

use std::collections::{BTreeMap, BTreeSet};

use super::record::StopRule;
use crate::metrics::passuntil::Instance;

/// The outcome of a decided problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Samples counted (`0..trials`).
    pub trials: u64,
    /// Successes among them.
    pub successes: u64,
}

/// What is known about one problem's samples.
#[derive(Clone, Debug, Default)]
pub struct ProblemState {
    judged: BTreeMap<u64, bool>,
    in_flight: BTreeSet<u64>,
    /// Leading indices that are all judged.
    contiguous: u64,
    /// Successes among them.
    prefix_successes: u64,
    successes: u64,
    /// Smallest index never issued nor judged (everything below is one or the other, except
    /// holes left by an interruption, which `holes` lists).
    frontier: u64,
    holes: BTreeSet<u64>,
    decision: Option<Decision>,
}

impl ProblemState {
    /// Records a judged sample. Returns whether this decided the problem.
    pub fn judged(&mut self, index: u64, passed: bool, rule: &StopRule) -> bool {
        self.in_flight.remove(&index);
        self.holes.remove(&index);
        if self.judged.insert(index, passed).is_some() {
            return false;
        }
        self.successes += u64::from(passed);
        if index >= self.frontier {
            for h in self.frontier..index {
                if !self.in_flight.contains(&h) {
                    self.holes.insert(h);
                }
            }
            self.frontier = index + 1;
        }
        if self.decision.is_some() {
            return false;
        }
        while let Some(&ok) = self.judged.get(&self.contiguous) {
            self.contiguous += 1;
            self.prefix_successes += u64::from(ok);
            let done = match rule {
                StopRule::PassUntil { r, max_samples } => {
                    self.prefix_successes == *r || self.contiguous == *max_samples
                }
                StopRule::Fixed { n, .. } => self.contiguous == *n,
            };
            if done {
                self.decision = Some(Decision {
                    trials: self.contiguous,
                    successes: self.prefix_successes,
                });
                return true;
            }
        }
        false
    }

    /// The next index to sample, if one is still useful, marking it in flight.
    pub fn issue(&mut self, rule: &StopRule) -> Option<u64> {
        if self.decision.is_some() {
            return None;
        }
        let (cap, r) = match rule {
            StopRule::PassUntil { r, max_samples } => (*max_samples, Some(*r)),
            StopRule::Fixed { n, .. } => (*n, None),
        };
        let next = match self.holes.first() {
            Some(&h) => h,
            None => self.frontier,
        };
        if next >= cap {
            return None;
        }
        if let Some(r) = r {
            // Enough successes below `next` already decide the problem once the gaps fill.
            let below = if next >= self.frontier {
                self.successes
            } else {
                self.judged.range(..next).filter(|(_, &ok)| ok).count() as u64
            };
            if below >= r {
                return None;
            }
        }
        if next == self.frontier {
            self.frontier += 1;
        } else {
            self.holes.remove(&next);
        }
        self.in_flight.insert(next);
        Some(next)
    }

    /// Samples being generated or judged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The decision, once made.
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    /// The PassUntil instance of a decided problem.
    pub fn instance(&self, r: u64) -> Option<Instance> {
        self.decision.map(|d| Instance {
            successes: d.successes,
            trials: d.trials,
            r,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PU: StopRule = StopRule::PassUntil {
        r: 2,
        max_samples: 10,
    };

    #[test]
    fn decides_at_the_rth_success_in_index_order() {
        let mut s = ProblemState::default();
        let issued: Vec<u64> = (0..5).map_while(|_| s.issue(&PU)).collect();
        assert_eq!(issued, vec![0, 1, 2, 3, 4]);
        // Out of order: 3 and 4 pass first, but 0..3 are not yet judged.
        assert!(!s.judged(4, true, &PU));
        assert!(!s.judged(3, true, &PU));
        // Two successes below 5: nothing past 4 is needed.
        assert_eq!(s.issue(&PU), None);
        assert!(!s.judged(0, false, &PU));
        assert!(!s.judged(2, false, &PU));
        assert!(s.judged(1, true, &PU));
        assert_eq!(
            s.decision(),
            Some(Decision {
                trials: 4,
                successes: 2
            })
        );
        // A sample judged after the decision changes nothing.
        assert!(!s.judged(4, true, &PU));
        assert_eq!(s.decision().unwrap().trials, 4);
    }

    #[test]
    fn censored_at_the_cap() {
        let mut s = ProblemState::default();
        let mut decided = false;
        while let Some(i) = s.issue(&PU) {
            decided = s.judged(i, i == 7, &PU);
        }
        assert!(decided);
        assert_eq!(
            s.decision(),
            Some(Decision {
                trials: 10,
                successes: 1
            })
        );
        assert!(s.instance(2).unwrap().censored());
    }

    #[test]
    fn resumed_holes_are_filled_first() {
        let rule = StopRule::Fixed { n: 6, k: vec![1] };
        let mut s = ProblemState::default();
        for i in [0, 2, 5] {
            s.judged(i, false, &rule);
        }
        let issued: Vec<u64> = std::iter::from_fn(|| s.issue(&rule)).collect();
        assert_eq!(issued, vec![1, 3, 4]);
        for i in issued {
            s.judged(i, true, &rule);
        }
        assert_eq!(
            s.decision(),
            Some(Decision {
                trials: 6,
                successes: 3
            })
        );
    }
}
