use super::SaliencyMap;

/// An ellipse in coordinates relative to the image: `(0, 0)` top left, `(1, 1)` bottom right.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ellipse {
    /// Centre, horizontal.
    pub cx: f64,
    /// Centre, vertical.
    pub cy: f64,
    /// Half-width.
    pub rx: f64,
    /// Half-height.
    pub ry: f64,
}

impl Ellipse {
    fn contains(&self, x: f64, y: f64) -> bool {
        ((x - self.cx) / self.rx).powi(2) + ((y - self.cy) / self.ry).powi(2) <= 1.0
    }
}

/// A fixed region where the lung fields of a centred frontal film lie, to ask how much of a
/// saliency map falls on the lungs.
///
/// No lung masks exist for this data, so this is not a segmentation: it is two ellipses placed
/// by eye on the mean of 1,739 training films (every third of the 5,216, at 224 px;
/// `pediatric_frontal`), where the two dark lung fields stand out between the bright
/// mediastinum, shoulders and abdomen; together they cover 28% of the image. On one film they miss parts
/// of the lungs (rotation, inspiration, a child off-centre) and include some ribs and soft
/// tissue; the share is a coarse check that maps avoid text markers, corners, shoulders and the
/// abdomen, to be read against the region's own share of the image area.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ThoracicRegion {
    /// The union of these ellipses is the region.
    pub ellipses: Vec<Ellipse>,
}

impl ThoracicRegion {
    /// The two lung-field ellipses placed on the mean training film (see the type's docs).
    pub fn pediatric_frontal() -> ThoracicRegion {
        ThoracicRegion {
            ellipses: vec![
                Ellipse {
                    cx: 0.32,
                    cy: 0.45,
                    rx: 0.16,
                    ry: 0.28,
                },
                Ellipse {
                    cx: 0.68,
                    cy: 0.45,
                    rx: 0.16,
                    ry: 0.28,
                },
            ],
        }
    }

    /// Whether the centre of pixel `(x, y)` of a `width` x `height` image is inside.
    pub fn contains_pixel(&self, x: u32, y: u32, width: u32, height: u32) -> bool {
        let (fx, fy) = (
            (x as f64 + 0.5) / width as f64,
            (y as f64 + 0.5) / height as f64,
        );
        self.ellipses.iter().any(|e| e.contains(fx, fy))
    }

    /// The share of the image's pixels inside: what a map spread evenly would score.
    pub fn area_fraction(&self, width: u32, height: u32) -> f64 {
        let inside = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .filter(|&(x, y)| self.contains_pixel(x, y, width, height))
            .count();
        inside as f64 / (width as f64 * height as f64)
    }

    /// The share of the map's total mass inside the region (0 for an all-zero map).
    pub fn share(&self, map: &SaliencyMap) -> f64 {
        let (mut inside, mut total) = (0.0, 0.0);
        for y in 0..map.height {
            for x in 0..map.width {
                let v = f64::from(map.values[(y * map.width + x) as usize]);
                total += v;
                if self.contains_pixel(x, y, map.width, map.height) {
                    inside += v;
                }
            }
        }
        if total > 0.0 {
            inside / total
        } else {
            0.0
        }
    }
}
