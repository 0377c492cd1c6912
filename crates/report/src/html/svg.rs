//! The little SVG every chart shares: escaping, a linear scale with round
//! ticks, axes, and a legend. Written by hand so the page carries its
//! pictures inline and fetches nothing.

use std::fmt::Write;

/// Text made safe for XML/HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0 at all.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Maps a data interval onto a pixel interval.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub from_px: f64,
    pub to_px: f64,
}

impl Scale {
    /// A scale over `[lo, hi]`, widened to a non-empty interval.
    pub fn new(lo: f64, hi: f64, from_px: f64, to_px: f64) -> Self {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi > lo {
            (lo, hi)
        } else if lo.is_finite() {
            (lo, lo + 1.0)
        } else {
            (0.0, 1.0)
        };
        Self {
            lo,
            hi,
            from_px,
            to_px,
        }
    }

    /// The pixel of `value`, clamped to the axis so a stray value never
    /// draws outside the chart.
    pub fn px(&self, value: f64) -> f64 {
        let value = if value.is_finite() {
            value.clamp(self.lo, self.hi)
        } else {
            self.hi
        };
        self.from_px + (value - self.lo) / (self.hi - self.lo) * (self.to_px - self.from_px)
    }

    /// Round tick values: steps of 1, 2 or 5 times a power of ten, about
    /// `count` of them.
    pub fn ticks(&self, count: usize) -> Vec<f64> {
        let step = nice_step((self.hi - self.lo) / count.max(1) as f64);
        let first = (self.lo / step).ceil() as i64;
        let last = (self.hi / step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }

    /// Round tick values for a time axis in seconds: steps of 1, 2, 5, 10,
    /// 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 6, 12 h.
    pub fn time_ticks(&self, count: usize) -> Vec<f64> {
        const STEPS: [f64; 16] = [
            1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
            21600.0, 43200.0,
        ];
        let wanted = (self.hi - self.lo) / count.max(1) as f64;
        match STEPS.iter().find(|&&s| s >= wanted) {
            Some(&step) => {
                let first = (self.lo / step).ceil() as i64;
                let last = (self.hi / step + 1e-9).floor() as i64;
                (first..=last).map(|i| i as f64 * step).collect()
            }
            None => self.ticks(count),
        }
    }
}

/// The smallest of 1, 2, 5 times a power of ten at or above `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// A time-axis tick label: seconds below two minutes, `m:ss` below an
/// hour, `h:mm` beyond.
pub fn time_label(seconds: f64) -> String {
    let s = seconds.round() as i64;
    if seconds < 120.0 {
        format!("{s}s")
    } else if seconds < 3600.0 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{}:{:02}h", s / 3600, s / 60 % 60)
    }
}

/// The plot area of a chart, in pixels.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Frame {
    /// The frame of the report's line charts (the time series and the
    /// CDF), one above the other: the same width and axes' margins.
    pub const CHART: Frame = Frame {
        width: 900.0,
        height: 300.0,
        left: 64.0,
        right: 16.0,
        top: 28.0,
        bottom: 40.0,
    };

    pub fn plot_left(&self) -> f64 {
        self.left
    }
    pub fn plot_right(&self) -> f64 {
        self.width - self.right
    }
    pub fn plot_top(&self) -> f64 {
        self.top
    }
    pub fn plot_bottom(&self) -> f64 {
        self.height - self.bottom
    }
    pub fn x_scale(&self, lo: f64, hi: f64) -> Scale {
        Scale::new(lo, hi, self.plot_left(), self.plot_right())
    }
    pub fn y_scale(&self, lo: f64, hi: f64) -> Scale {
        Scale::new(lo, hi, self.plot_bottom(), self.plot_top())
    }
}

/// Opens an `<svg>` element of the frame's size.
pub fn open(out: &mut String, frame: &Frame, class: &str, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="{class}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">"#,
        w = frame.width,
        h = frame.height,
        label = escape(label),
    );
}

/// The title of a time axis counted from the evacuation's start.
pub const SINCE_START: &str = "time since the evacuation began";

/// A time axis along the bottom with grid lines, and its title.
pub fn time_axis(out: &mut String, frame: &Frame, x: &Scale, title: &str) {
    let (top, bottom) = (frame.plot_top(), frame.plot_bottom());
    for t in x.time_ticks(8) {
        let px = x.px(t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{px:.1}" y1="{top:.1}" x2="{px:.1}" y2="{bottom:.1}"/><text class="tick" x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 14.0,
            time_label(t)
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{:.1}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}"/><text class="axis-title" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        frame.plot_left(),
        frame.plot_right(),
        (frame.plot_left() + frame.plot_right()) / 2.0,
        frame.height - 4.0,
        escape(title)
    );
}

/// A value axis on the left with grid lines and a title.
pub fn value_axis(out: &mut String, frame: &Frame, y: &Scale, title: &str, label: fn(f64) -> String) {
    let (left, right) = (frame.plot_left(), frame.plot_right());
    for v in y.ticks(5) {
        let py = y.px(v);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{left:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            py + 4.0,
            escape(&label(v))
        );
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{left:.1}" y1="{:.1}" x2="{left:.1}" y2="{:.1}"/><text class="axis-title" transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        frame.plot_top(),
        frame.plot_bottom(),
        (frame.plot_top() + frame.plot_bottom()) / 2.0,
        escape(title)
    );
}

/// One legend entry's look.
pub enum Swatch<'a> {
    /// A stroke of this colour, width and dash pattern (empty: solid).
    Line(&'a str, f64, &'a str),
    /// A filled box of this colour.
    Box(&'a str),
}

/// A row of legend entries along the top edge, starting at the plot's left.
pub fn legend(out: &mut String, frame: &Frame, entries: &[(Swatch, String)]) {
    let mut x = frame.plot_left();
    let y = 14.0;
    out.push_str(r#"<g class="legend">"#);
    for (swatch, text) in entries {
        match swatch {
            Swatch::Line(colour, width, dash) => {
                let _ = write!(
                    out,
                    r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="{width}" stroke-dasharray="{dash}"/>"#,
                    y - 4.0,
                    x + 22.0,
                    y - 4.0
                );
            }
            Swatch::Box(colour) => {
                let _ = write!(
                    out,
                    r#"<rect x="{x:.1}" y="{:.1}" width="22" height="10" fill="{colour}"/>"#,
                    y - 9.0
                );
            }
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{y:.1}">{}</text>"#,
            x + 27.0,
            escape(text)
        );
        // Approximate width of the text at the legend's font size.
        x += 27.0 + 6.5 * text.chars().count() as f64 + 16.0;
    }
    out.push_str("</g>");
}

/// An SVG path through `points`, holding each value until the next point
/// (the data are per-period averages and counts, piecewise constant).
pub fn step_path(points: &[(f64, f64)], x: &Scale, y: &Scale) -> String {
    let mut d = String::new();
    let mut last_y = None;
    for &(t, v) in points {
        let (px, py) = (x.px(t), y.px(v));
        match last_y {
            None => {
                let _ = write!(d, "M{px:.1},{py:.1}");
            }
            Some(previous) => {
                let _ = write!(d, "H{px:.1}");
                if previous != py {
                    let _ = write!(d, "V{py:.1}");
                }
            }
        }
        last_y = Some(py);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(escape("a\u{1}b"), "a\u{fffd}b");
    }

    #[test]
    fn scale_maps_linearly_and_clamps() {
        let s = Scale::new(0.0, 40.0, 100.0, 500.0);
        // 10 of 40 is a quarter of the 400 px: 100 + 100.
        assert_eq!(s.px(10.0), 200.0);
        assert_eq!(s.px(-5.0), 100.0);
        assert_eq!(s.px(99.0), 500.0);
        // An inverted pixel range (a y axis) works the same way.
        let y = Scale::new(0.0, 2.0, 300.0, 100.0);
        assert_eq!(y.px(0.5), 250.0);
        // A degenerate interval is widened instead of dividing by zero.
        assert!(Scale::new(3.0, 3.0, 0.0, 10.0).px(3.0).is_finite());
    }

    #[test]
    fn round_steps() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(200.0), 200.0);
        let s = Scale::new(0.0, 1687.0, 0.0, 1.0);
        // 1687 / 8 = 211 s a tick: the next round step is 5 min.
        let ticks = s.time_ticks(8);
        assert_eq!(ticks.first(), Some(&0.0));
        assert_eq!(ticks[1], 300.0);
        assert_eq!(ticks.last(), Some(&1500.0));
    }

    #[test]
    fn labels() {
        assert_eq!(time_label(30.0), "30s");
        assert_eq!(time_label(300.0), "5:00");
        assert_eq!(time_label(5400.0), "1:30h");
    }

    #[test]
    fn steps_hold_values() {
        let x = Scale::new(0.0, 10.0, 0.0, 100.0);
        let y = Scale::new(0.0, 10.0, 100.0, 0.0);
        let d = step_path(&[(0.0, 1.0), (5.0, 1.0), (10.0, 3.0)], &x, &y);
        assert_eq!(d, "M0.0,90.0H50.0H100.0V70.0");
    }
}
