//! What every example program shares.

use std::process::ExitCode;

/// Runs `body` and turns an error into one line on stderr (the whole cause chain, outermost
/// first) and a failing exit code, instead of a multi-line report or a panic.
pub fn run_main(body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    eprintln!("{}", xray_pneumonia::eval::DISCLAIMER);
    // The libraries log through `log`; show their messages (info and up, or RUST_LOG) bare.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write;
            writeln!(buf, "{}", record.args())
        })
        .init();
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Tunes the process for tensors (glibc keeps freed memory) and opens the fastest device (or the
/// CPU with `force_cpu`), telling a CUDA device's memory pool to keep freed memory too. Call it
/// before any other thread starts.
// bench picks its device itself.
#[allow(dead_code)]
pub fn tuned_device(force_cpu: bool) -> anyhow::Result<candle_core::Device> {
    use xray_pneumonia::ops::process::{keep_freed_device_memory, keep_freed_memory};
    keep_freed_memory();
    let device = xray_pneumonia::pipeline::pick_device(force_cpu)?;
    keep_freed_device_memory(&device)?;
    Ok(device)
}

/// Which training augmentation a training program uses.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AugmentationKind {
    /// Geometry, brightness and contrast (`AugmentConfig::default`).
    Standard,
    /// Wider ranges plus gamma, blur and noise (`AugmentConfig::strong`).
    Strong,
    /// Strong, with contrast down to 0.5 and blur up to 3 px (`AugmentConfig::acquisition`).
    Acquisition,
}

#[allow(dead_code)]
impl AugmentationKind {
    /// The augmentation this kind names.
    pub fn config(self) -> xray_pneumonia::data::AugmentConfig {
        match self {
            AugmentationKind::Standard => xray_pneumonia::data::AugmentConfig::default(),
            AugmentationKind::Strong => xray_pneumonia::data::AugmentConfig::strong(),
            AugmentationKind::Acquisition => xray_pneumonia::data::AugmentConfig::acquisition(),
        }
    }
}

/// Where a program runs its model: the device and the films per forward pass.
#[allow(dead_code)]
#[derive(clap::Args, Debug)]
pub struct DeviceArgs {
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    pub cpu: bool,
}

#[allow(dead_code)]
impl DeviceArgs {
    /// Tunes the process, opens the device and loads the bundle in `dir` onto it.
    pub fn load(&self, dir: &std::path::Path) -> anyhow::Result<xray_pneumonia::infer::Bundle> {
        let device = tuned_device(self.cpu)?;
        self.load_on(dir, &device)
    }

    /// Loads the bundle in `dir` onto an open `device`.
    pub fn load_on(
        &self,
        dir: &std::path::Path,
        device: &candle_core::Device,
    ) -> anyhow::Result<xray_pneumonia::infer::Bundle> {
        Ok(load_bundle(dir, device)?.with_batch_size(self.batch_size))
    }
}

/// A trained bundle to add fitted parts to, and the data it was trained on.
#[allow(dead_code)]
#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    /// Model bundle directory; its config.json is rewritten.
    #[arg(long)]
    pub model: std::path::PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Dataset root the bundle was trained on (its split folder is read from the bundle).
    #[arg(long, default_value = "../shared/data/kermany224")]
    pub data: std::path::PathBuf,
}

/// Which labelled films a program scores.
#[allow(dead_code)]
#[derive(clap::Args, Debug)]
pub struct FilmArgs {
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long)]
    pub data: std::path::PathBuf,
    /// Folder under the root.
    #[arg(long)]
    pub split: String,
    /// Only the patients on this side of the bundle's own split (train, validation or test; for
    /// the folder the bundle was trained on); omitted, every film.
    #[arg(long)]
    pub holdout: Option<xray_pneumonia::data::Side>,
}

#[allow(dead_code)]
impl FilmArgs {
    /// `all`, or the side's name.
    pub fn holdout_name(&self) -> &'static str {
        self.holdout.map_or("all", xray_pneumonia::data::Side::name)
    }
}

/// Loads the bundle in `dir` onto `device`, naming the directory if that fails.
#[allow(dead_code)]
pub fn load_bundle(
    dir: &std::path::Path,
    device: &candle_core::Device,
) -> anyhow::Result<xray_pneumonia::infer::Bundle> {
    use anyhow::Context;
    xray_pneumonia::infer::Bundle::load(dir, device)
        .with_context(|| format!("loading bundle {}", dir.display()))
}

/// What both training programs take besides their own hyper-parameters.
#[allow(dead_code)]
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Most epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Epochs without a better validation AUC before stopping.
    #[arg(long, default_value_t = 5)]
    pub patience: usize,
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long, default_value = "../shared/data/kermany224")]
    pub data: std::path::PathBuf,
    /// Folder under the root to split by patient into train/validation/test.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Training augmentation: `strong` (gamma, blur, noise, wider ranges), `acquisition` (strong, with contrast down to 0.5 and blur up to 3 px) or `standard`.
    #[arg(long, value_enum, default_value_t = AugmentationKind::Strong)]
    pub augmentation: AugmentationKind,
    /// Seed of the split, initialisation, shuffling and augmentation.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Take the train / validation / test patients from this JSON file (`train_patients`,
    /// `validation_patients`, `test_patients`; a bundle's config.json works) instead of the
    /// seeded 70/15/15 split, e.g. `splits/family.json` (docs/shift.md).
    #[arg(long)]
    pub split_file: Option<std::path::PathBuf>,
    /// Sensitivity the threshold must reach on validation; omit for the conformal pneumonia
    /// bound at the refer band's error rate (the band's upper edge).
    #[arg(long)]
    pub target_sensitivity: Option<f64>,
    /// Error rate per class of the conformal refer band fitted on validation, and of the default
    /// threshold (docs/shift.md, section 7).
    #[arg(long, default_value_t = xray_pneumonia::pipeline::DEFAULT_REFER_ALPHA)]
    pub refer_alpha: f64,
    /// Skip unreadable images (listed in the bundle) instead of stopping.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Use only the first N images of each class (smoke tests).
    #[arg(long)]
    pub limit_per_class: Option<usize>,
    /// Continue an interrupted run from `<out>/checkpoint.safetensors` (written after every
    /// epoch; same arguments needed). Without it a run starts afresh.
    #[arg(long)]
    pub resume: bool,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    pub cpu: bool,
}

#[allow(dead_code)]
impl RunArgs {
    /// The trainer's settings these arguments give (one warm-up epoch).
    pub fn train_config(&self, class_weighted: bool) -> xray_pneumonia::train::TrainConfig {
        xray_pneumonia::train::TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.lr,
            weight_decay: self.weight_decay,
            warmup_epochs: 1,
            patience: self.patience,
            seed: self.seed,
            class_weighted,
        }
    }
}

/// Parses the command line of `T` with `defaults` (argument id, value) in place of those its
/// definition gives: the training programs share [`RunArgs`] but not their recipes' defaults.
#[allow(dead_code)]
pub fn parse_with_defaults<T: clap::Parser>(defaults: &[(&'static str, &'static str)]) -> T {
    let mut command = T::command();
    for &(id, value) in defaults {
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    let matches = command.get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A progress bar over `len` items with their rate and the time left.
#[allow(dead_code)]
pub fn progress_bar(len: usize, items: &str) -> indicatif::ProgressBar {
    let template = format!("[{{bar:30}}] {{pos}}/{{len}} {items}, {{per_sec}}, eta {{eta}}");
    let style = indicatif::ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(len as u64).with_style(style)
}

/// A progress bar per epoch, and each finished epoch's record as a JSON line on stdout.
#[allow(dead_code)]
#[derive(Default)]
pub struct EpochLog {
    bar: Option<indicatif::ProgressBar>,
}

impl xray_pneumonia::train::Observer for EpochLog {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize) {
        let bar = self.bar.get_or_insert_with(|| {
            let style = indicatif::ProgressStyle::with_template(
                "epoch {msg} [{bar:30}] {pos}/{len} steps, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(steps as u64)
                .with_style(style)
                .with_message(format!("{}", epoch + 1))
        });
        bar.set_position(step as u64 + 1);
    }

    fn on_epoch(
        &mut self,
        record: &xray_pneumonia::train::EpochRecord,
    ) -> Result<(), xray_pneumonia::train::TrainError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!("{}", serde_json::to_string(record).unwrap_or_default());
        Ok(())
    }
}

/// Prepares the data as `args` say, trains with `recipe` (checkpointing every epoch to
/// `<out>/checkpoint.safetensors`, resuming from it with `--resume`), writes the bundle to `out`
/// and removes the checkpoint.
#[allow(dead_code)]
pub fn train_bundle(
    args: &RunArgs,
    out: &std::path::Path,
    size: u32,
    config: xray_pneumonia::train::TrainConfig,
    recipe: impl FnOnce(
        xray_pneumonia::recipes::RecipeRun<'_>,
    ) -> Result<xray_pneumonia::recipes::TrainedModel, xray_pneumonia::Error>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use xray_pneumonia::pipeline::{describe_data, prepare_data, save_run, threshold_rule};
    let started = std::time::Instant::now();
    let device = tuned_device(args.cpu)?;
    let split_config = xray_pneumonia::data::SplitConfig {
        seed: args.seed,
        ..Default::default()
    };
    let mut data = prepare_data(
        &args.data,
        &args.split,
        size,
        args.skip_unreadable,
        args.limit_per_class,
        &split_config,
    )
    .with_context(|| format!("preparing {}", args.data.display()))?;
    if let Some(file) = &args.split_file {
        data.use_split_file(file)?;
    }
    describe_data(&data, args.seed);
    let checkpoint = out.join("checkpoint.safetensors");
    let mut log = EpochLog::default();
    let trained = recipe(xray_pneumonia::recipes::RecipeRun {
        data: &data,
        device: &device,
        train: config,
        augmentation: args.augmentation.config(),
        observer: &mut log,
        checkpoint: Some((checkpoint.clone(), args.resume)),
    })?;
    let context = xray_pneumonia::pipeline::RunContext {
        config,
        split_config,
        started,
        rule: threshold_rule(args.target_sensitivity, args.refer_alpha),
        refer_alpha: args.refer_alpha,
    };
    save_run(out, &data, trained, context)?;
    match std::fs::remove_file(&checkpoint) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", checkpoint.display()))
        }
        _ => Ok(()),
    }
}
