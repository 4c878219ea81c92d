//! A triple fault's chain: each delivery the CPU attempted, as the host replayed it, with the
//! exception each failed delivery raised drawn as a failure, and the shutdown at the end.

use super::escape;
use super::model::{Delivery, LoopLine, Raised};
use std::fmt::Write as _;

fn exception(e: &Raised) -> String {
    let mut text = format!("<b>{}</b>", escape(&e.name));
    if let Some(error) = e.error {
        let _ = write!(text, " error {error:#x}");
    }
    if let Some(cr2) = &e.cr2 {
        let _ = write!(text, " CR2 {:#x}", cr2.0);
    }
    text
}

/// The section, or nothing for a run without a replayed triple fault.
pub fn section(chain: &[Delivery], before: Option<&LoopLine>) -> String {
    if chain.is_empty() {
        return String::new();
    }
    let mut html = String::from("<section class=\"chain\"><h2>How the CPU shut down</h2>");
    if let Some(l) = before {
        let _ = write!(
            html,
            "<p class=\"failed\">First a loop: {} deliveries to the handler at {:#x}, which the CPU cannot run, each frame below the last, the stack from {:#x} down to {:#x}",
            l.deliveries, l.handler.0, l.oldest_frame.0, l.newest_frame.0
        );
        if let Some(e) = &l.started {
            let _ = write!(html, "; it began with {}: {}", exception(e), escape(&e.why));
        }
        html.push_str("</p>");
    }
    html.push_str("<p>Each delivery the CPU attempted, replayed from the final state:</p><ol>");
    for step in chain {
        let _ = write!(
            html,
            "<li class=\"attempt\">{}: {}",
            exception(&step.exception),
            escape(&step.exception.why)
        );
        if let Some(raised) = &step.raised {
            let _ = write!(
                html,
                "<div class=\"failed\">✗ delivering it raised {}: {}</div>",
                exception(raised),
                escape(&raised.why)
            );
        }
        if let Some(d) = &step.delivered {
            let _ = write!(
                html,
                "<div class=\"reached\">✓ delivered: handler {:#x}, frame at {:#x}</div>",
                d.handler.0, d.frame.0
            );
        }
        html.push_str("</li>");
    }
    html.push_str("</ol>");
    if chain.last().is_some_and(|d| d.shutdown) {
        html.push_str("<p class=\"failed\">a fault while delivering #DF: the CPU shut down (triple fault)</p>");
    }
    html.push_str("</section>");
    html
}
