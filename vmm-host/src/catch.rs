//! Sets of vectors a user names on the command line or in gdb (`gp,pf,df`, `13`, `0x20`,
//! `all`, `none`): the exceptions that stop the guest for gdb before their handler runs, and
//! the external interrupts (vectors 32–255) that stop it before the host delivers them.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatchError {
    #[error(
        "`{0}` is not a vector: use an exception's mnemonic (de, db, bp, ud, df, ts, np, ss, gp, pf, ac, …), a number 0–255 (32 and up are interrupts: 0x20), `all` or `none`"
    )]
    Unknown(String),
}

/// Vectors 0–255 as a bit set: exceptions (0–31) and external interrupts (32–255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSet([u64; 4]);

/// The 32 exception vectors' bits in the set's first word.
const EXCEPTIONS: u64 = u32::MAX as u64;

impl VectorSet {
    pub const NONE: Self = Self([0; 4]);
    /// Every exception; interrupts are named one by one.
    pub const ALL: Self = Self([EXCEPTIONS, 0, 0, 0]);

    /// The faults that mean a kernel bug in almost every kernel: #DE, #UD, #DF, #TS, #NP,
    /// #SS, #GP, #AC. #PF is left out because demand paging takes thousands of them on the
    /// way to the one that matters; `--break-on pf` adds it.
    pub const BUGS: Self = Self([
        1 << 0 | 1 << 6 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 17,
        0,
        0,
        0,
    ]);

    pub fn contains(self, vector: u8) -> bool {
        self.0[usize::from(vector / 64)] & (1 << (vector % 64)) != 0
    }

    /// Whether an external interrupt at `vector` stops: only vectors from 32 are interrupts
    /// by name (a PIC left at vector 8 still sends its IRQ 0 as an interrupt, not a #DF).
    pub fn stops_interrupt(self, vector: u8) -> bool {
        vector >= 32 && self.contains(vector)
    }

    pub fn is_empty(self) -> bool {
        self.0 == [0; 4]
    }

    fn insert(&mut self, vector: u8) {
        self.0[usize::from(vector / 64)] |= 1 << (vector % 64);
    }

    /// Parse `gp,pf,df`, `13,14`, `#GP`, `0x20`, `all` or `none` (comma or space separated).
    pub fn parse(text: &str) -> Result<Self, CatchError> {
        let mut set = Self::NONE;
        for word in text
            .split([',', ' '])
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            let lower = word.trim_start_matches('#').to_ascii_lowercase();
            match lower.as_str() {
                "all" => set.0[0] = EXCEPTIONS,
                "none" => set = Self::NONE,
                _ => set.insert(
                    vector(&lower)
                        .or_else(|| numbered_vector(&lower))
                        .ok_or_else(|| CatchError::Unknown(word.into()))?,
                ),
            }
        }
        Ok(set)
    }
}

/// A vector by number, 0–255, in decimal or hex (`0x20`).
fn numbered_vector(word: &str) -> Option<u8> {
    match word.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16).ok(),
        None => word.parse::<u8>().ok(),
    }
}

impl Default for VectorSet {
    fn default() -> Self {
        Self::BUGS
    }
}

/// One vector by number (0–31) or mnemonic (`gp`, `#GP`, `PF`).
pub fn parse_vector(word: &str) -> Option<u8> {
    vector(&word.trim().trim_start_matches('#').to_ascii_lowercase())
}

fn vector(word: &str) -> Option<u8> {
    if let Ok(n) = word.parse::<u8>() {
        return (n < 32).then_some(n);
    }
    (0..32u8).find(|&v| {
        let mnemonic = abi::exception::mnemonic(v);
        mnemonic.starts_with('#') && mnemonic[1..].eq_ignore_ascii_case(word)
    })
}

impl fmt::Display for VectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut names: Vec<String> = if self.0[0] & EXCEPTIONS == EXCEPTIONS {
            vec!["all".into()]
        } else {
            (0..32u8)
                .filter(|&v| self.contains(v))
                .map(|v| {
                    let m = abi::exception::mnemonic(v);
                    match m.strip_prefix('#') {
                        Some(name) => name.to_ascii_lowercase(),
                        None => v.to_string(),
                    }
                })
                .collect()
        };
        names.extend(
            (32..=255u8)
                .filter(|&v| self.contains(v))
                .map(|v| format!("{v:#x}")),
        );
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnemonics_numbers_and_words() {
        let set = VectorSet::parse("gp,pf, #DF 0").unwrap();
        assert!(set.contains(13) && set.contains(14) && set.contains(8) && set.contains(0));
        assert!(!set.contains(6));
        assert_eq!(set.to_string(), "de,df,gp,pf");
        assert_eq!(VectorSet::parse("all").unwrap(), VectorSet::ALL);
        assert_eq!(VectorSet::parse("none").unwrap().to_string(), "none");
        assert_eq!(VectorSet::parse("14").unwrap().to_string(), "pf");
    }

    #[test]
    fn the_default_leaves_page_faults_out() {
        let set = VectorSet::default();
        assert_eq!(set.to_string(), "de,ud,df,ts,np,ss,gp,ac");
        assert!(!set.contains(14));
    }

    #[test]
    fn unknown_words_and_out_of_range_numbers_are_errors() {
        for bad in ["xx", "256", "0x100", "pf,nope", "-1", "0xzz"] {
            let err = VectorSet::parse(bad).unwrap_err();
            assert!(err.to_string().contains("is not a vector"), "{err}");
        }
    }

    #[test]
    fn interrupt_vectors_by_number_stop_deliveries_only_from_32() {
        assert_eq!(
            VectorSet::parse("0xd").unwrap(),
            VectorSet::parse("gp").unwrap()
        );
        let set = VectorSet::parse("gp,0x20,33,255").unwrap();
        assert!(set.contains(0x20) && set.contains(33) && set.contains(255));
        assert!(set.stops_interrupt(0x20) && set.stops_interrupt(255));
        assert!(!set.stops_interrupt(13), "vector 13 names #GP, not an IRQ");
        assert!(!set.stops_interrupt(0x22));
        assert_eq!(set.to_string(), "gp,0x20,0x21,0xff");
        let all = VectorSet::parse("all,0x30").unwrap();
        assert_eq!(all.to_string(), "all,0x30");
        assert!(!VectorSet::ALL.contains(32), "all means every exception");
        assert_eq!(VectorSet::parse("0x20,none").unwrap(), VectorSet::NONE);
    }
}
