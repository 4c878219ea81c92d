//! Sets of exception vectors a user names on the command line or in gdb (`gp,pf,df`, `13`,
//! `all`, `none`): the exceptions that stop the guest for gdb.

use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatchError {
    #[error(
        "`{0}` is not an exception vector: use a mnemonic (de, db, bp, ud, df, ts, np, ss, gp, pf, ac, …), a number 0–31, `all` or `none`"
    )]
    Unknown(String),
}

/// Exception vectors 0–31 as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSet(u32);

impl VectorSet {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(u32::MAX);

    /// The faults that mean a kernel bug in almost every kernel: #DE, #UD, #DF, #TS, #NP,
    /// #SS, #GP, #AC. #PF is left out because demand paging takes thousands of them on the
    /// way to the one that matters; `--break-on pf` adds it.
    pub const BUGS: Self =
        Self(1 << 0 | 1 << 6 | 1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 17);

    pub fn contains(self, vector: u8) -> bool {
        vector < 32 && self.0 & (1 << vector) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parse `gp,pf,df`, `13,14`, `#GP`, `all` or `none` (comma or space separated).
    pub fn parse(text: &str) -> Result<Self, CatchError> {
        let mut set = 0u32;
        for word in text
            .split([',', ' '])
            .map(str::trim)
            .filter(|w| !w.is_empty())
        {
            let lower = word.trim_start_matches('#').to_ascii_lowercase();
            match lower.as_str() {
                "all" => set = u32::MAX,
                "none" => set = 0,
                _ => set |= 1 << vector(&lower).ok_or_else(|| CatchError::Unknown(word.into()))?,
            }
        }
        Ok(Self(set))
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
        if self.0 == 0 {
            return f.write_str("none");
        }
        if self.0 == u32::MAX {
            return f.write_str("all");
        }
        let names: Vec<String> = (0..32u8)
            .filter(|&v| self.contains(v))
            .map(|v| {
                let m = abi::exception::mnemonic(v);
                match m.strip_prefix('#') {
                    Some(name) => name.to_ascii_lowercase(),
                    None => v.to_string(),
                }
            })
            .collect();
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
        for bad in ["xx", "32", "pf,nope", "-1"] {
            let err = VectorSet::parse(bad).unwrap_err();
            assert!(
                err.to_string().contains("is not an exception vector"),
                "{err}"
            );
        }
    }
}
