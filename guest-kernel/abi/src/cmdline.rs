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
}
