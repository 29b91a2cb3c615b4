//! An account's audit trail is two capped trails shown as one: the real records (enrollments,
//! challenges, deliveries, decisions, authenticated refusals; [`AUDIT_CAP`]) and the refusals of
//! requests that failed authentication ([`REFUSED_CAP`]). Anyone who knows a device id can cause the
//! second kind, so they are capped apart and can never push a real record out (DESIGN.md guarantee 11).
//! ListAuditEvents merges both, newest first; its page token holds a position in each. Pure: both
//! stores read their trails and hand them here.

use super::{AuditPage, StoreError};
use crate::audit::StoredAudit;

/// Real audit records kept per account.
pub const AUDIT_CAP: usize = 1_000;
/// Records of unauthenticated refusals kept per account, apart from the real ones.
pub const REFUSED_CAP: usize = 200;

/// Where a page of the merged trail starts: before these positions of each trail (`None`: newest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Position in the real records.
    pub main: Option<String>,
    /// Position in the refusals.
    pub refused: Option<String>,
}

impl Cursor {
    /// Parses a page token (`<main>~<refused>`, either side empty); `valid` checks one position.
    ///
    /// # Errors
    /// [`StoreError::InvalidPosition`] for a token this relay did not issue.
    pub fn parse(token: Option<&str>, valid: impl Fn(&str) -> bool) -> Result<Self, StoreError> {
        let Some(token) = token else {
            return Ok(Self::default());
        };
        let (main, refused) = token.split_once('~').unwrap_or((token, ""));
        let side = |p: &str| -> Result<Option<String>, StoreError> {
            match p {
                "" => Ok(None),
                p if valid(p) => Ok(Some(p.to_owned())),
                _ => Err(StoreError::InvalidPosition),
            }
        };
        let cursor = Self {
            main: side(main)?,
            refused: side(refused)?,
        };
        if cursor == Self::default() {
            return Err(StoreError::InvalidPosition);
        }
        Ok(cursor)
    }

    fn token(&self) -> String {
        format!(
            "{}~{}",
            self.main.as_deref().unwrap_or_default(),
            self.refused.as_deref().unwrap_or_default()
        )
    }
}

/// Merges up to `limit + 1` newest records of each trail before `cursor` (each newest first) into one
/// page of `limit`, newest first (at the same millisecond the real record first), with the token of
/// the next page when either trail has more.
pub fn merge(
    main: Vec<StoredAudit>,
    refused: Vec<StoredAudit>,
    limit: usize,
    cursor: Cursor,
) -> AuditPage {
    let (mut main, mut refused) = (main.into_iter().peekable(), refused.into_iter().peekable());
    let mut next = cursor;
    let mut records = Vec::with_capacity(limit);
    while records.len() < limit {
        let take_main = match (main.peek(), refused.peek()) {
            (Some(m), Some(r)) => m.at_ms >= r.at_ms,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (record, side) = if take_main {
            (main.next(), &mut next.main)
        } else {
            (refused.next(), &mut next.refused)
        };
        if let Some(record) = record {
            *side = Some(record.position.clone());
            records.push(record);
        }
    }
    let more = main.peek().is_some() || refused.peek().is_some();
    AuditPage {
        records,
        next: more.then(|| next.token()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditKind, AuditRecord};
    use crate::challenge::AccountId;

    fn at(position: &str, at_ms: i64) -> StoredAudit {
        StoredAudit {
            position: position.into(),
            at_ms,
            record: AuditRecord::new(
                &AccountId::parse("a").expect("valid"),
                AuditKind::ChallengeCreated,
                Actor::Backend,
            ),
        }
    }

    #[test]
    fn pages_of_the_merged_trails_cover_both_without_gaps_or_repeats() {
        let main: Vec<StoredAudit> = [(9, 90), (7, 70), (5, 50), (3, 30), (1, 10)]
            .iter()
            .map(|(p, t)| at(&p.to_string(), *t))
            .collect();
        let refused: Vec<StoredAudit> = [(8, 80), (6, 60), (2, 20)]
            .iter()
            .map(|(p, t)| at(&p.to_string(), *t))
            .collect();
        let before = |list: &[StoredAudit], p: &Option<String>| -> Vec<StoredAudit> {
            let limit: i64 = p.as_deref().map_or(i64::MAX, |p| p.parse().expect("n"));
            list.iter()
                .filter(|r| r.position.parse::<i64>().expect("n") < limit)
                .take(3)
                .cloned()
                .collect()
        };
        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        loop {
            let page = merge(
                before(&main, &cursor.main),
                before(&refused, &cursor.refused),
                2,
                cursor.clone(),
            );
            seen.extend(page.records.iter().map(|r| r.at_ms));
            match page.next {
                Some(token) => {
                    cursor = Cursor::parse(Some(&token), |p| p.parse::<u64>().is_ok())
                        .expect("own token");
                }
                None => break,
            }
        }
        assert_eq!(seen, [90, 80, 70, 60, 50, 30, 20, 10]);
    }

    #[test]
    fn tokens_that_were_not_issued_are_refused() {
        let valid = |p: &str| p.parse::<u64>().is_ok();
        assert!(Cursor::parse(Some("x~1"), valid).is_err());
        assert!(Cursor::parse(Some("~"), valid).is_err());
        assert_eq!(
            Cursor::parse(Some("5"), valid).expect("a position alone is the main trail's"),
            Cursor {
                main: Some("5".into()),
                refused: None
            }
        );
    }
}
