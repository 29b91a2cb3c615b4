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
    /// Wrong numbers that end the challenge DENIED: the relay's setting in mode `Type` (fixed when
    /// the challenge is created), always 1 in mode `Choose` (a tap on a wrong choice ends it, or a
    /// fatigued owner could approve by tapping every choice in turn), 0 in mode `None`.
    pub attempts: u32,
}

/// Most wrong numbers a challenge in [`NumberMode::Type`] may be configured to allow.
pub const MAX_TYPE_ATTEMPTS: u32 = 5;

/// Whether a number-match answer is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberVerdict {
    /// The answer matches, or no number was asked for.
    Match,
    /// No answer where one was required.
    Missing,
    /// The answer is not the number on the screen.
    Wrong,
    /// A number where none was asked for (mode `None`): a client bug, refused so it is found.
    Unexpected,
}

impl NumberMatch {
    /// Draws a fresh number (and decoys) for a new challenge; `type_attempts` (1 to
    /// [`MAX_TYPE_ATTEMPTS`]) is how many numbers the owner may type before a wrong one ends it.
    pub fn generate(mode: NumberMode, type_attempts: u32, rng: &mut impl Rng) -> Self {
        match mode {
            NumberMode::None => Self {
                mode,
                number: 0,
                choices: Vec::new(),
                attempts: 0,
            },
            NumberMode::Type => Self {
                mode,
                number: rng.gen_range(10..100),
                choices: Vec::new(),
                attempts: type_attempts.clamp(1, MAX_TYPE_ATTEMPTS),
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
                    attempts: 1,
                }
            }
        }
    }

    /// Checks the owner's answer (0 meaning "no answer").
    pub fn check(&self, answer: u32) -> NumberVerdict {
        match (self.mode, answer) {
            (NumberMode::None, 0) => NumberVerdict::Match,
            (NumberMode::None, _) => NumberVerdict::Unexpected,
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
            let m = NumberMatch::generate(NumberMode::Choose, 3, &mut rng);
            assert!((10..100).contains(&m.number));
            assert_eq!(m.choices.len(), 3);
            assert!(m.choices.contains(&m.number));
            assert_eq!(m.attempts, 1, "a wrong tap always ends a CHOOSE challenge");
            let mut sorted = m.choices.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 3);
        }
    }

    #[test]
    fn only_the_shown_number_matches() {
        let m = NumberMatch::generate(NumberMode::Type, 1, &mut StdRng::seed_from_u64(1));
        assert_eq!(m.check(m.number), NumberVerdict::Match);
        assert_eq!(m.check(0), NumberVerdict::Missing);
        assert_eq!(
            m.check(if m.number == 99 { 98 } else { m.number + 1 }),
            NumberVerdict::Wrong
        );
        let none = NumberMatch::generate(NumberMode::None, 1, &mut StdRng::seed_from_u64(1));
        assert_eq!(none.check(0), NumberVerdict::Match);
        assert_eq!(none.check(42), NumberVerdict::Unexpected);
    }
}
