//! Charts for the self-contained HTML reports (`train --report`, `drift
//! report --html`): plotters draws each to an inline SVG string, so a page
//! needs no script and fetches nothing when opened.

use plotters::coord::Shift;
use plotters::prelude::*;

/// A chart's default size in pixels.
pub const SIZE: (u32, u32) = (560, 360);

/// An SVG of `size`, drawn by `draw` on a white area; or, if plotters
/// fails, a line saying which chart and why.
pub fn svg_chart(
    title: &str,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        if let Err(e) = drawn {
            return format!(
                "<p>{}: not drawn ({})</p>",
                escape(title),
                escape(&e.to_string())
            );
        }
    }
    svg
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
