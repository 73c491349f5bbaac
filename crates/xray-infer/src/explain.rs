//! Saliency maps of a bundle's prediction: five methods, the references they need, and
//! [`Bundle::explain`], which maps a film of any size at that size.

use std::str::FromStr;

use candle_core::{Device, Tensor};
use serde::Serialize;
use xray_data::{images_to_tensor, resize_to_input, GrayImage, Preprocessing};
use xray_eval::{
    grad_cam, integrated_gradients, occlusion, smooth_grad, vanilla_gradient, EvalError,
    ExplainedClass, OcclusionConfig, SaliencyMap, SmoothGradConfig,
};
use xray_models::Classifier;

use crate::{Bundle, InferError};

/// A saliency method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `|gradient|` (Simonyan et al., 2014).
    Vanilla,
    /// Gradients averaged over noisy copies (Smilkov et al., 2017).
    SmoothGrad,
    /// Path-integrated gradients from a baseline film (Sundararajan et al., 2017).
    IntegratedGradients,
    /// Class activation of the last convolutional block (Selvaraju et al., 2017).
    GradCam,
    /// Logit drop when a patch is blacked out (Zeiler & Fergus, 2014).
    Occlusion,
}

impl Method {
    /// Every method, in report order.
    pub const ALL: [Method; 5] = [
        Method::Vanilla,
        Method::SmoothGrad,
        Method::IntegratedGradients,
        Method::GradCam,
        Method::Occlusion,
    ];

    /// The name used on the command line and in `explain.json`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Vanilla => "vanilla",
            Method::SmoothGrad => "smoothgrad",
            Method::IntegratedGradients => "integrated_gradients",
            Method::GradCam => "gradcam",
            Method::Occlusion => "occlusion",
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s || (s == "ig" && *m == Method::IntegratedGradients))
            .ok_or_else(|| {
                format!(
                    "unknown method {s:?}; choose from {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                )
            })
    }
}

/// Where Integrated Gradients' path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgBaseline {
    /// The film blurred: "no detail", but still film-like, so the path stays near real inputs
    /// and the integral converges with fewer steps (on MobileNetV2, 1.4% from exact at 64 steps
    /// where the black film gave 3.8%).
    Blurred,
    /// A black film: "no signal", the classic choice, far from any real film.
    Black,
}

impl FromStr for IgBaseline {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "blurred" => Ok(IgBaseline::Blurred),
            "black" => Ok(IgBaseline::Black),
            _ => Err(format!("unknown baseline {s:?}; choose blurred or black")),
        }
    }
}

/// Settings of the methods.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MethodSettings {
    /// SmoothGrad's samples, noise and seed.
    pub smooth_grad: SmoothGradConfig,
    /// Integrated Gradients' path steps.
    pub ig_steps: usize,
    /// Integrated Gradients' baseline.
    pub ig_baseline: IgBaseline,
    /// Occlusion patch and stride.
    pub occlusion: OcclusionConfig,
    /// Images per forward pass.
    pub batch: usize,
}

impl Default for MethodSettings {
    fn default() -> Self {
        MethodSettings {
            smooth_grad: SmoothGradConfig::default(),
            ig_steps: 32,
            ig_baseline: IgBaseline::Blurred,
            occlusion: OcclusionConfig::default(),
            batch: 16,
        }
    }
}

/// The reference inputs the methods and curves need, for one film.
pub struct References {
    /// The film as the model sees it, `(1, C, H, W)`.
    pub input: Tensor,
    /// A black film through the same preprocessing: the occluder, and Integrated Gradients'
    /// baseline when asked for.
    pub black: Tensor,
    /// The film blurred (Gaussian, sigma = 5% of its side): Integrated Gradients' default
    /// baseline, what deletion replaces pixels with and where insertion starts (blurring removes the detail a map points at while keeping the
    /// film's overall look, so the perturbed films stay closer to real ones than black holes).
    pub blurred: Tensor,
}

impl References {
    /// Builds the three inputs for `film` (already at the model's input size).
    pub fn new(
        film: &GrayImage,
        preprocessing: &Preprocessing,
        device: &Device,
    ) -> Result<References, InferError> {
        let (w, h) = film.dimensions();
        let black = GrayImage::new(w, h);
        let blurred = image::imageops::blur(film, 0.05 * w as f32);
        let tensor = |image: &GrayImage| images_to_tensor(&[image], preprocessing, device);
        Ok(References {
            input: tensor(film)?,
            black: tensor(&black)?,
            blurred: tensor(&blurred)?,
        })
    }
}

/// One method's map of one film for `class`.
pub fn saliency(
    model: &Classifier,
    method: Method,
    references: &References,
    class: ExplainedClass,
    settings: &MethodSettings,
) -> Result<SaliencyMap, EvalError> {
    let logits = |x: &Tensor| model.logits(x);
    let input = &references.input;
    match method {
        Method::Vanilla => vanilla_gradient(logits, input),
        Method::SmoothGrad => smooth_grad(logits, input, &settings.smooth_grad),
        Method::IntegratedGradients => Ok(integrated_gradients(
            logits,
            input,
            match settings.ig_baseline {
                IgBaseline::Blurred => &references.blurred,
                IgBaseline::Black => &references.black,
            },
            settings.ig_steps,
            settings.batch,
            class,
        )?
        .map),
        Method::GradCam => grad_cam(
            |x| model.cam_activation(x),
            |a| model.logits_from_cam_activation(a),
            input,
            class,
        ),
        Method::Occlusion => {
            occlusion(logits, input, &references.black, &settings.occlusion, class)
        }
    }
}

impl Bundle {
    /// `method`'s saliency map of this film, at the film's own size, explaining the class the
    /// model calls at its operating point (pneumonia or normal).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), xray_infer::InferError> {
    /// use xray_infer::{Bundle, Method};
    /// let bundle = Bundle::load("models/mobilenet_v2".as_ref(), &candle_core::Device::Cpu)?;
    /// let film = xray_infer::read_film("film.png".as_ref())?;
    /// let map = bundle.explain(&film, Method::GradCam)?;
    /// assert_eq!((map.width, map.height), film.dimensions());
    /// # Ok(()) }
    /// ```
    pub fn explain(&self, film: &GrayImage, method: Method) -> Result<SaliencyMap, InferError> {
        self.explain_with(film, method, &MethodSettings::default())
    }

    /// [`Bundle::explain`] with the methods' settings spelt out.
    pub fn explain_with(
        &self,
        film: &GrayImage,
        method: Method,
        settings: &MethodSettings,
    ) -> Result<SaliencyMap, InferError> {
        let input = resize_to_input(film, self.input_size());
        let references = References::new(&input, &self.config.preprocessing, self.device())?;
        let logit = self
            .model
            .logits(&references.input)?
            .flatten_all()?
            .to_vec1::<f32>()?[0];
        let class = ExplainedClass::predicted(logit, self.operating_point().threshold);
        let map = saliency(&self.model, method, &references, class, settings)?;
        Ok(map.resized(film.width(), film.height()))
    }
}
