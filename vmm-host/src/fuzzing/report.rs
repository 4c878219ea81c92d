//! The JSON-lines reader behind `vmm-host report` and the page drawn from what it read.

use super::assert_one_line;
use crate::html::model::Report;

/// A report file is refused in one line naming the file, or drawn as a page whose sections
/// are balanced and in which nothing from the file became markup.
pub fn report(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let report = match Report::parse("fuzz.jsonl", &text) {
        Err(e) => {
            let message = e.to_string();
            assert_one_line("a refused report file", &message);
            assert!(message.starts_with("fuzz.jsonl"), "{message}");
            return;
        }
        Ok(report) => report,
    };
    let page = crate::html::render(&report, "fuzz <b>title</b>");
    assert!(!page.contains("<b>title</b>"), "the title is not escaped");
    assert!(
        !page.contains("<script"),
        "markup from the report file: {page}"
    );
    assert_eq!(
        page.matches("<section").count(),
        page.matches("</section>").count(),
        "unbalanced sections"
    );
}
