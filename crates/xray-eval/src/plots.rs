//! ROC, precision-recall, reliability, confusion-matrix and training-curve plots, each drawn
//! once as SVG (text stays text) and once as PNG.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{ConfusionMatrix, EvalError, PrCurve, ReliabilityBin, RiskCoverage, RocCurve};

/// Environment variable naming a TrueType font for plot text, tried before the usual places.
pub const FONT_VARIABLE: &str = "XRAY_FONT";

/// Where common Linux, macOS and Windows installs keep a sans-serif TrueType font.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font with plotters once per process (plotters measures text to lay out
/// axes, so even SVG output needs one). Nothing is bundled: fonts come from the machine.
fn ensure_font() -> Result<(), String> {
    static FONT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var_os(FONT_VARIABLE).map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // plotters keeps fonts for the whole process; one font is leaked once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(path);
            }
        }
        Err(format!(
            "no TrueType font found: set {FONT_VARIABLE} to one, or install DejaVu \
             (Debian: fonts-dejavu-core); looked in {}",
            FONT_PATHS.join(", ")
        ))
    })
    .as_ref()
    .map(|_| ())
    .map_err(Clone::clone)
}

/// A plot drawn both as SVG and as PNG.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, e.g. `roc`.
    pub name: String,
    /// The SVG document.
    pub svg: String,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
}

impl Figure {
    /// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`.
    pub fn save(&self, dir: &Path) -> Result<(), EvalError> {
        std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
        let svg = dir.join(format!("{}.svg", self.name));
        std::fs::write(&svg, &self.svg).map_err(|e| write_error(&svg, e))?;
        let png = dir.join(format!("{}.png", self.name));
        std::fs::write(&png, &self.png).map_err(|e| write_error(&png, e))
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

type DrawResult = Result<(), String>;

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Something that can draw itself on any plotters backend.
pub trait Plot {
    /// File stem and name in error messages.
    fn name(&self) -> &str;
    /// Draws onto `area`.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult;
}

/// Draws `plot` at `width` x `height` pixels as SVG and PNG.
pub fn render<P: Plot>(plot: &P, width: u32, height: u32) -> Result<Figure, EvalError> {
    let plot_error = |reason: String| EvalError::Plot {
        plot: plot.name().to_string(),
        reason,
    };
    ensure_font().map_err(plot_error)?;
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_error(fail(e)))?;
        plot.draw(&area).map_err(plot_error)?;
        area.present().map_err(|e| plot_error(fail(e)))?;
    }
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        area.fill(&WHITE).map_err(|e| plot_error(fail(e)))?;
        plot.draw(&area).map_err(plot_error)?;
        area.present().map_err(|e| plot_error(fail(e)))?;
    }
    let image = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| plot_error("bitmap size mismatch".into()))?;
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| plot_error(fail(e)))?;
    Ok(Figure {
        name: plot.name().to_string(),
        svg,
        png,
    })
}

/// Series colours, distinguishable in print and for common colour-vision deficiencies
/// (Okabe-Ito).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

fn colour(k: usize) -> RGBColor {
    COLOURS[k % COLOURS.len()]
}

/// Draws each series as a line and each marker as a dot, with legend entries, in colour order.
fn lines_and_markers<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    series: &[Series],
    markers: &[(String, (f64, f64))],
) -> DrawResult {
    for (k, (label, points)) in series.iter().enumerate() {
        let c = colour(k);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
            .map_err(fail)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    for (k, (label, point)) in markers.iter().enumerate() {
        let c = colour(series.len() + k);
        chart
            .draw_series(std::iter::once(Circle::new(*point, 5, c.filled())))
            .map_err(fail)?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, c.filled()));
    }
    Ok(())
}

/// Draws line series on a unit square with a legend.
fn unit_square_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    diagonal: bool,
    markers: &[(String, (f64, f64))],
) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(fail)?;
    if diagonal {
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                RGBColor(150, 150, 150),
            ))
            .map_err(fail)?;
    }
    lines_and_markers(&mut chart, series, markers)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(fail)
}

/// ROC curves of one or more models, with marked operating points.
pub struct RocPlot {
    /// `(legend, curve)` per model.
    pub curves: Vec<(String, RocCurve)>,
    /// `(legend, (1 - specificity, sensitivity))` of marked thresholds.
    pub markers: Vec<(String, (f64, f64))>,
}

impl Plot for RocPlot {
    fn name(&self) -> &str {
        "roc"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let series: Vec<Series> = self
            .curves
            .iter()
            .map(|(label, c)| {
                let points = c.fpr.iter().copied().zip(c.tpr.iter().copied()).collect();
                (label.clone(), points)
            })
            .collect();
        unit_square_chart(
            area,
            "ROC curve",
            "1 - specificity",
            "sensitivity",
            &series,
            true,
            &self.markers,
        )
    }
}

/// Precision-recall curves, the horizontal line at the data's prevalence being chance.
pub struct PrPlot {
    /// `(legend, curve)` per model.
    pub curves: Vec<(String, PrCurve)>,
    /// Share of pneumonia in the data.
    pub prevalence: f64,
}

impl Plot for PrPlot {
    fn name(&self) -> &str {
        "pr"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let mut series: Vec<Series> = self
            .curves
            .iter()
            .map(|(label, c)| {
                // Start at recall 0 with the first precision, as the step-wise area does.
                let mut points = vec![(0.0, c.precision.first().copied().unwrap_or(1.0))];
                points.extend(c.recall.iter().copied().zip(c.precision.iter().copied()));
                (label.clone(), points)
            })
            .collect();
        series.push((
            format!("chance (prevalence {:.3})", self.prevalence),
            vec![(0.0, self.prevalence), (1.0, self.prevalence)],
        ));
        unit_square_chart(
            area,
            "Precision-recall curve",
            "recall (sensitivity)",
            "precision",
            &series,
            false,
            &[],
        )
    }
}

/// Reliability diagram: observed pneumonia rate against mean predicted probability per bin.
pub struct ReliabilityPlot {
    /// `(legend, bins)` per probability version (e.g. raw and temperature-scaled).
    pub series: Vec<(String, Vec<ReliabilityBin>)>,
}

impl Plot for ReliabilityPlot {
    fn name(&self) -> &str {
        "calibration"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let series: Vec<Series> = self
            .series
            .iter()
            .map(|(label, bins)| {
                let points = bins
                    .iter()
                    .map(|b| (b.mean_probability, b.observed_rate))
                    .collect();
                (label.clone(), points)
            })
            .collect();
        unit_square_chart(
            area,
            "Reliability diagram (diagonal: perfect calibration)",
            "mean predicted probability",
            "observed pneumonia rate",
            &series,
            true,
            &[],
        )
    }
}

/// A 2 x 2 confusion matrix, rows the truth, with counts and row shares.
pub struct ConfusionPlot {
    /// The counts.
    pub matrix: ConfusionMatrix,
    /// The threshold they come from.
    pub threshold: f64,
}

impl Plot for ConfusionPlot {
    fn name(&self) -> &str {
        "confusion"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let m = &self.matrix;
        let title = format!("Confusion matrix at threshold {:.3}", self.threshold);
        let area = area.titled(&title, ("sans-serif", 20)).map_err(fail)?;
        let (w, h) = area.dim_in_pixel();
        let (left, top) = (160i32, 40i32);
        let cell_w = (w as i32 - left - 10) / 2;
        let cell_h = (h as i32 - top - 10) / 2;
        let style = TextStyle::from(("sans-serif", 17).into_font());
        let rows = [
            ("truth: normal", m.tn, m.fp),
            ("truth: pneumonia", m.fn_, m.tp),
        ];
        let names = [["TN", "FP"], ["FN", "TP"]];
        for (col, label) in ["called normal", "called pneumonia"].iter().enumerate() {
            let x = left + col as i32 * cell_w + cell_w / 2 - 55;
            area.draw_text(label, &style, (x, top - 25)).map_err(fail)?;
        }
        for (r, (label, a, b)) in rows.iter().enumerate() {
            let total = (a + b).max(1) as f64;
            let y0 = top + r as i32 * cell_h;
            area.draw_text(label, &style, (2, y0 + cell_h / 2))
                .map_err(fail)?;
            for (c, count) in [*a, *b].iter().enumerate() {
                let share = *count as f64 / total;
                let correct = r == c;
                let base = if correct { colour(2) } else { colour(1) };
                let x0 = left + c as i32 * cell_w;
                area.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w - 4, y0 + cell_h - 4)],
                    base.mix(0.15 + 0.75 * share).filled(),
                ))
                .map_err(fail)?;
                let text = format!("{} {} ({:.1}%)", names[r][c], count, share * 100.0);
                area.draw_text(&text, &style, (x0 + 12, y0 + cell_h / 2))
                    .map_err(fail)?;
            }
        }
        Ok(())
    }
}

/// A named line: `(legend, [(x, y)])`.
pub type Series = (String, Vec<(f64, f64)>);

/// Training curves: one panel per quantity, epochs on the x axis.
pub struct TrainingCurvesPlot {
    /// `(panel title, lines)`.
    pub panels: Vec<(String, Vec<Series>)>,
}

impl Plot for TrainingCurvesPlot {
    fn name(&self) -> &str {
        "training"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        if self.panels.is_empty() {
            return Err("no training curves to draw".into());
        }
        let parts = area.split_evenly((1, self.panels.len()));
        for (part, (title, series)) in parts.iter().zip(&self.panels) {
            let points = series.iter().flat_map(|(_, p)| p.iter());
            let (mut x_max, mut y_min, mut y_max) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
            for &(x, y) in points.filter(|p| p.1.is_finite()) {
                x_max = x_max.max(x);
                y_min = y_min.min(y);
                y_max = y_max.max(y);
            }
            if !y_min.is_finite() {
                (y_min, y_max) = (0.0, 1.0);
            }
            let pad = ((y_max - y_min) * 0.05).max(1e-3);
            let mut chart = ChartBuilder::on(part)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max + 0.5, (y_min - pad)..(y_max + pad))
                .map_err(fail)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(fail)?;
            for (k, (label, p)) in series.iter().enumerate() {
                let c = colour(k);
                chart
                    .draw_series(LineSeries::new(p.iter().copied(), c.stroke_width(2)))
                    .map_err(fail)?
                    .label(label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(fail)?;
        }
        Ok(())
    }
}

/// Risk-coverage curves: the error rate among the films kept as the least confident are
/// referred, with marked operating points (e.g. the refer band's coverage and risk).
pub struct RiskCoveragePlot {
    /// `(legend, curve)` per model.
    pub curves: Vec<(String, RiskCoverage)>,
    /// `(legend, (coverage, risk))` of marked points.
    pub markers: Vec<(String, (f64, f64))>,
}

impl Plot for RiskCoveragePlot {
    fn name(&self) -> &str {
        "risk_coverage"
    }
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult {
        let top = self
            .curves
            .iter()
            .flat_map(|(_, c)| c.risk.iter().copied())
            .chain(self.markers.iter().map(|(_, (_, r))| *r))
            .fold(0.01f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(
                "Risk-coverage (least confident referred first)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..top)
            .map_err(fail)?;
        chart
            .configure_mesh()
            .x_desc("coverage (share of films called)")
            .y_desc("error rate among films called")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(fail)?;
        let series: Vec<Series> = self
            .curves
            .iter()
            .map(|(label, c)| {
                let points = c.coverage.iter().copied().zip(c.risk.iter().copied());
                (label.clone(), points.collect())
            })
            .collect();
        lines_and_markers(&mut chart, &series, &self.markers)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(fail)
    }
}
