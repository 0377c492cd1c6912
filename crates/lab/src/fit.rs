//! The least-squares line through measurements, for calibrating the
//! model's per-migration costs from lab runs (`examples/calibrate.rs`).

/// The least-squares line `y = a + b x` through `points`: `(a, b)`, or
/// `None` when every `x` is the same (no slope to tell).
pub fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| {
        let b = sxy / sxx;
        (my - b * mx, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-12 && (a.1 - b.1).abs() < 1e-12
    }

    #[test]
    fn a_line_through_exact_points_is_that_line() {
        let fit = fit_line(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!(close(fit, (1.0, 2.0)), "{fit:?}");
    }

    #[test]
    fn scattered_points_give_the_least_squares_line() {
        // By hand: mean x 1, mean y 2/3; Sxx = 2, Sxy = (-1)(-2/3) + (1)(1/3)
        // = 1, so b = 1/2 and a = 2/3 - 1/2 = 1/6.
        let fit = fit_line(&[(0.0, 0.0), (1.0, 1.0), (2.0, 1.0)]).unwrap();
        assert!(close(fit, (1.0 / 6.0, 0.5)), "{fit:?}");
    }

    #[test]
    fn one_x_only_has_no_slope() {
        assert_eq!(fit_line(&[(2.0, 1.0), (2.0, 3.0)]), None);
        assert_eq!(fit_line(&[]), None);
    }
}
