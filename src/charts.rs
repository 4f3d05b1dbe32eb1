//! Charts for the self-contained HTML reports (`train --report`, `drift
//! report --html`): plotters draws each to an inline SVG string, so a page
//! needs no script and fetches nothing when opened.

use plotters::coord::Shift;
use plotters::prelude::*;

/// A chart's default size in pixels.
pub const SIZE: (u32, u32) = (560, 360);

/// The series' legend, boxed on a light background.
pub fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// A bar series' key in the legend: a small filled box.
pub fn bar_key(color: RGBAColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled())
}

/// The top of a chart's value axis: the largest of `values`, at least
/// `floor` (an axis even when every value is zero), times `headroom`
/// (room above the highest bar or line).
pub fn axis_top(values: impl IntoIterator<Item = f64>, floor: f64, headroom: f64) -> f64 {
    values.into_iter().fold(0.0, f64::max).max(floor) * headroom
}

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
