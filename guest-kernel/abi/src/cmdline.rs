//! The kernel command line: words separated by spaces, each `key=value` or a bare `key`.
//!
//! Later words win, as on Linux, so a scenario can append an override to a default line.

/// A parsed view of a command line; borrowing, allocation-free.
#[derive(Debug, Clone, Copy)]
pub struct Cmdline<'a> {
    text: &'a str,
}

/// One word of a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word<'a> {
    pub key: &'a str,
    /// `None` for a bare word such as `quiet`; `Some("")` for `key=`.
    pub value: Option<&'a str>,
}

impl<'a> Cmdline<'a> {
    pub const fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The whole line as given.
    pub const fn as_str(&self) -> &'a str {
        self.text
    }

    /// Every word, in order.
    pub fn words(&self) -> impl Iterator<Item = Word<'a>> + 'a {
        self.text
            .split_ascii_whitespace()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => Word {
                    key,
                    value: Some(value),
                },
                None => Word {
                    key: word,
                    value: None,
                },
            })
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.words()
            .filter(|w| w.key == key)
            .filter_map(|w| w.value)
            .last()
    }

    /// The first word whose key is not in `known`, so the kernel can refuse a typo.
    pub fn first_unknown(&self, known: &[&str]) -> Option<Word<'a>> {
        self.words().find(|w| !known.contains(&w.key))
    }
}

/// A size the way Linux's `memparse` reads one: a number with an optional K, M or G suffix
/// (binary units, either case). `None` when malformed or too large.
pub fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    let number: u64 = digits.parse().ok()?;
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_last_one_wins() {
        let c = Cmdline::new("vmm=boxkernel  test=heap log=quiet test=journey");
        assert_eq!(c.get("vmm"), Some("boxkernel"));
        assert_eq!(c.get("test"), Some("journey"));
        assert_eq!(c.get("pmm"), None);
    }

    #[test]
    fn bare_words_and_empty_values() {
        let c = Cmdline::new("quiet key=");
        let words: [Word; 2] = [
            Word {
                key: "quiet",
                value: None,
            },
            Word {
                key: "key",
                value: Some(""),
            },
        ];
        assert!(c.words().eq(words));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.get("key"), Some(""));
    }

    #[test]
    fn value_may_contain_equals() {
        assert_eq!(Cmdline::new("a=b=c").get("a"), Some("b=c"));
    }

    #[test]
    fn reports_first_unknown_key() {
        let c = Cmdline::new("test=hello tset=heap");
        assert_eq!(c.first_unknown(&["test"]).map(|w| w.key), Some("tset"));
        assert!(Cmdline::new("").first_unknown(&[]).is_none());
    }

    #[test]
    fn sizes_read_like_memparse() {
        assert_eq!(parse_size("96M"), Some(96 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("12k"), Some(12 << 10));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_size("-1M"), None);
        assert_eq!(parse_size("99999999999999999G"), None);
    }
}
