//! Number matching: the sign-in screen shows a two-digit number that the owner must type or pick on the
//! phone, so an approval proves the owner is looking at that very sign-in (the answer to push bombing).

use rand::Rng;
use rand::seq::SliceRandom;

/// How the owner proves they see the sign-in screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberMode {
    /// No number; approve or deny only.
    None,
    /// The owner types the number shown on the sign-in screen.
    Type,
    /// The owner picks the number among three.
    Choose,
}

/// The number of one challenge, with the choices the phone shows in [`NumberMode::Choose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberMatch {
    /// The mode the backend asked for.
    pub mode: NumberMode,
    /// Shown on the sign-in screen; 0 in mode `None`.
    pub number: u32,
    /// Three distinct numbers including `number`, shuffled; empty unless mode is `Choose`.
    pub choices: Vec<u32>,
}

/// Whether a number-match answer is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberVerdict {
    /// The answer matches, or no number was asked for.
    Match,
    /// No answer where one was required.
    Missing,
    /// The answer is not the number on the screen.
    Wrong,
}

impl NumberMatch {
    /// Draws a fresh number (and decoys) for a new challenge.
    pub fn generate(mode: NumberMode, rng: &mut impl Rng) -> Self {
        match mode {
            NumberMode::None => Self {
                mode,
                number: 0,
                choices: Vec::new(),
            },
            NumberMode::Type => Self {
                mode,
                number: rng.gen_range(10..100),
                choices: Vec::new(),
            },
            NumberMode::Choose => {
                let number = rng.gen_range(10..100);
                let mut choices = vec![number];
                while choices.len() < 3 {
                    let decoy = rng.gen_range(10..100);
                    if !choices.contains(&decoy) {
                        choices.push(decoy);
                    }
                }
                choices.shuffle(rng);
                Self {
                    mode,
                    number,
                    choices,
                }
            }
        }
    }

    /// Checks the owner's answer (0 meaning "no answer").
    pub fn check(&self, answer: u32) -> NumberVerdict {
        match (self.mode, answer) {
            (NumberMode::None, _) => NumberVerdict::Match,
            (_, 0) => NumberVerdict::Missing,
            (_, n) if n == self.number => NumberVerdict::Match,
            _ => NumberVerdict::Wrong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn choose_offers_three_distinct_two_digit_numbers_including_the_right_one() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1000 {
            let m = NumberMatch::generate(NumberMode::Choose, &mut rng);
            assert!((10..100).contains(&m.number));
            assert_eq!(m.choices.len(), 3);
            assert!(m.choices.contains(&m.number));
            let mut sorted = m.choices.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
        }
    }

    #[test]
    fn only_the_shown_number_matches() {
        let m = NumberMatch::generate(NumberMode::Type, &mut StdRng::seed_from_u64(1));
        assert_eq!(m.check(m.number), NumberVerdict::Match);
        assert_eq!(m.check(0), NumberVerdict::Missing);
        assert_eq!(
            m.check(if m.number == 99 { 98 } else { m.number + 1 }),
            NumberVerdict::Wrong
        );
        let none = NumberMatch::generate(NumberMode::None, &mut StdRng::seed_from_u64(1));
        assert_eq!(none.check(0), NumberVerdict::Match);
    }
}
