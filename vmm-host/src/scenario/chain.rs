//! `[[expect.chain]]`: the exceptions of a triple fault, step by step, as the host replays
//! them from the final state: each a vector and, optionally, a phrase its reason must
//! contain. The chain must be exactly as long as the list.

use super::expect::{ExpectError, Located, RawVector, TapFacts, vector};
use abi::exception::mnemonic;
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChainStep {
    vector: Spanned<RawVector>,
    why: Option<Spanned<String>>,
}

/// One exception of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainExpect {
    pub vector: u8,
    /// A phrase the reason must contain ("past the IDT limit", "no IST").
    pub why: Option<String>,
}

impl fmt::Display for ChainExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(mnemonic(self.vector))?;
        if let Some(why) = &self.why {
            write!(f, " ({why:?})")?;
        }
        Ok(())
    }
}

pub(super) fn chain_step(raw: RawChainStep) -> Result<ChainExpect, ExpectError> {
    let why = match raw.why {
        Some(text) if text.get_ref().trim().is_empty() => {
            return Err(ExpectError {
                offset: text.span().start,
                message: "an empty reason matches anything: remove it".into(),
            });
        }
        other => other.map(Spanned::into_inner),
    };
    Ok(ChainExpect {
        vector: vector(&raw.vector)?,
        why,
    })
}

/// The chain the run's triple fault replayed against the expected one, step by step.
pub fn check_chain(wanted: &[Located<ChainExpect>], facts: &TapFacts<'_>) -> Vec<(usize, String)> {
    let Some(first) = wanted.first() else {
        return vec![];
    };
    let chain = match &facts.log.chain_at_end {
        None => {
            return vec![(
                first.line,
                "expected a chain of deliveries, but the run did not end in a triple fault".into(),
            )];
        }
        Some(Err(why)) => {
            return vec![(
                first.line,
                format!("the triple fault was not replayed: {why}"),
            )];
        }
        Some(Ok(chain)) => chain,
    };
    let entries = chain.entries();
    let mut failures: Vec<(usize, String)> = (wanted.iter().zip(&entries).enumerate())
        .filter_map(|(n, (expect, got))| {
            let vector_ok = expect.value.vector == got.vector;
            let why_ok = (expect.value.why.as_ref()).is_none_or(|phrase| got.why.contains(phrase));
            (!vector_ok || !why_ok).then(|| {
                (
                    expect.line,
                    format!(
                        "chain step {}: expected {}, the replay has {}: {}",
                        n + 1,
                        expect.value,
                        mnemonic(got.vector),
                        got.why
                    ),
                )
            })
        })
        .collect();
    if entries.len() != wanted.len() {
        failures.push((
            first.line,
            format!(
                "expected a chain of {} exceptions, the replay has {}: {}",
                wanted.len(),
                entries.len(),
                chain.summary()
            ),
        ));
    }
    failures
}
