//! The inference worker: a background thread that reads queued films with the bundle, writes
//! the film's rendition and saliency layers, and records the model's output. Pages never wait
//! for it. A case is marked done only after its images are on disk, so a crash in between
//! leaves it queued and it is read again on restart.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use xray_infer::{Bundle, Decision, Method, MethodSettings};

use crate::model::ModelOutput;
use crate::store::{write_atomically, Derived};
use crate::{Db, FilmStore, ReviewError};

/// How long the worker sleeps when the queue is empty and nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// A loaded bundle and what identifies it in every decision.
pub struct Inference {
    bundle: Bundle,
    bundle_sha256: String,
    settings: MethodSettings,
}

impl Inference {
    /// Loads the bundle in `dir` on the CPU. Its hash is the SHA-256 of `config.json`'s bytes
    /// followed by the weights' SHA-256 in hex: it changes when either does.
    pub fn load(dir: &Path) -> Result<Inference, ReviewError> {
        let bundle = Bundle::load(dir, &candle_core::Device::Cpu)?;
        let config_path = dir.join(Bundle::CONFIG);
        let config = std::fs::read(&config_path).map_err(|e| ReviewError::io(&config_path, e))?;
        let mut hasher = Sha256::new();
        hasher.update(&config);
        hasher.update(bundle.weights_sha256().as_bytes());
        Ok(Inference {
            bundle_sha256: xray_infer::hex(&hasher.finalize()),
            bundle,
            settings: MethodSettings::default(),
        })
    }

    /// The bundle's hash, recorded with every prediction and decision.
    pub fn bundle_sha256(&self) -> &str {
        &self.bundle_sha256
    }

    /// The operating point decisions are made at.
    pub fn operating_point(&self) -> &str {
        &self.bundle.operating_point().name
    }

    /// Reads one film: writes its rendition and (for a called film) its saliency layers into
    /// the store, and returns what the model said.
    pub fn read_film(
        &self,
        store: &FilmStore,
        sha: &str,
        name: &str,
    ) -> Result<ModelOutput, ReviewError> {
        let bytes = store.read(sha)?;
        let refused = |reason: String| ReviewError::Refused {
            name: name.to_string(),
            reason,
        };
        let (film, info) =
            xray_data::decode_film(Path::new(name), &bytes).map_err(|e| refused(e.to_string()))?;
        let prediction = self.bundle.predict_with_header(&film, info.as_ref())?;
        let rendition = image::DynamicImage::ImageLuma8(xray_data::to_gray8(&film));
        write_png(store, sha, Derived::Film, &rendition)?;
        let called = prediction.decision != Decision::Refer;
        if called {
            let style = xray_eval::OverlayStyle {
                opacity: 1.0,
                ..xray_eval::OverlayStyle::default()
            };
            for (method, derived) in [
                (Method::GradCam, Derived::GradCam),
                (Method::IntegratedGradients, Derived::IntegratedGradients),
            ] {
                let map = self.bundle.explain_with(&film, method, &self.settings)?;
                let layer = xray_eval::heat_layer(&map, film.width(), film.height(), &style);
                write_png(store, sha, derived, &image::DynamicImage::ImageRgba8(layer))?;
            }
        }
        Ok(ModelOutput {
            width: film.width(),
            height: film.height(),
            probability: prediction.probability,
            calibrated: prediction.calibrated_probability,
            decision: match prediction.decision {
                Decision::Pneumonia => "pneumonia",
                Decision::Normal => "normal",
                Decision::Refer => "refer",
            }
            .into(),
            operating_point: prediction.operating_point.clone(),
            threshold: prediction.threshold,
            refer_reasons: prediction
                .refer_reasons
                .iter()
                .map(|r| r.to_string())
                .collect(),
            ood_score: prediction.ood_score,
            overlays: called,
            bundle_sha256: self.bundle_sha256.clone(),
        })
    }
}

fn write_png(
    store: &FilmStore,
    sha: &str,
    what: Derived,
    image: &image::DynamicImage,
) -> Result<(), ReviewError> {
    let path = store
        .derived_path(sha, what)
        .ok_or_else(|| ReviewError::Task(format!("{sha} is not a SHA-256")))?;
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| ReviewError::io(&path, std::io::Error::other(e)))?;
    write_atomically(&path, &bytes)
}

/// The running worker: wake it after queueing a film; drop `stop` to end it.
pub struct Worker {
    wake: Sender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts the worker on its own thread. It first picks up whatever a previous run left
    /// queued.
    pub fn spawn(db: Arc<Db>, store: FilmStore, inference: Arc<Inference>) -> Worker {
        let (wake, woken) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run(&db, &store, &inference, &woken, &stopping))
            .ok();
        Worker { wake, stop, thread }
    }

    /// A handle that wakes the worker (cheap to clone).
    pub fn waker(&self) -> Sender<()> {
        self.wake.clone()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.wake.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(db: &Db, store: &FilmStore, inference: &Inference, woken: &Receiver<()>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let next = match db.next_queued() {
            Ok(next) => next,
            Err(e) => {
                log::error!("inference worker: {e}");
                None
            }
        };
        let Some((id, sha, name)) = next else {
            match woken.recv_timeout(IDLE_POLL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let recorded = match inference.read_film(store, &sha, &name) {
            Ok(output) => db.finish_case(id, &output),
            Err(e) => {
                log::warn!("case {id} ({name}): {e}");
                db.fail_case(id, &e.to_string(), inference.bundle_sha256())
            }
        };
        if let Err(e) = recorded {
            // Leave it queued, and do not spin on a database that refuses writes.
            log::error!("case {id}: {e}");
            std::thread::sleep(IDLE_POLL);
        }
    }
}
