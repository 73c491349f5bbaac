//! One synthetic film in every DICOM encoding and layout the reader supports
//! (`tools/make_dicom_fixtures.py` wrote `tests/fixtures/dicom/`): each lossless one decodes to
//! the same pixels as its PNG and gets the same probability within 1e-3; lossy baseline JPEG
//! matches its own stream decoded by libjpeg; broken files are refused with an error naming
//! them.

use std::path::{Path, PathBuf};

use candle_core::Device;
use xray_infer::{read_film, read_film_with_header, Bundle, GrayImage};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/dicom")
        .join(name)
}

fn largest_difference(a: &GrayImage, b: &GrayImage) -> f32 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `(file, largest pixel difference allowed)`: lossless encodings to float rounding, 12 bits to
/// their own quantisation, baseline JPEG (lossy, quality 95) to a few grey levels.
const SAME_FILM: &[(&str, f32)] = &[
    ("explicit_le_8bit.dcm", 1e-4),
    ("implicit_le_8bit.dcm", 1e-4),
    ("explicit_le_16bit.dcm", 1e-4),
    ("explicit_le_12bit.dcm", 2e-3),
    ("rescale.dcm", 1e-4),
    ("window_full.dcm", 1e-4),
    ("monochrome1.dcm", 1e-4),
    ("rle.dcm", 1e-4),
    ("deflate.dcm", 1e-4),
    ("jpeg_lossless.dcm", 1e-4),
    ("multiframe.dcm", 1e-4),
    ("no_meta.dcm", 1e-4),
    // Behind the `jpeg2000` feature, which this crate's tests turn on.
    ("jpeg2000_8bit.dcm", 1e-4),
    ("jpeg2000_16bit.dcm", 1e-4),
];

#[test]
fn every_encoding_decodes_to_the_same_film_and_the_same_probability() {
    let png = read_film(&fixture("base.png")).expect("base.png");
    let bundle = Bundle::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/mobilenet_v2"),
        &Device::Cpu,
    )
    .expect("bundle");
    let expected = bundle.predict(&png).expect("prediction").probability;
    for &(name, tolerance) in SAME_FILM {
        let (film, header) = read_film_with_header(&fixture(name)).expect(name);
        let header = header.unwrap_or_else(|| panic!("{name}: no DICOM header"));
        let difference = largest_difference(&film, &png);
        assert!(
            difference <= tolerance,
            "{name}: pixels differ by {difference}"
        );
        let p = bundle.predict(&film).expect("prediction").probability;
        assert!(
            (p - expected).abs() < 1e-3,
            "{name} ({}): probability {p}, PNG {expected}",
            header.transfer_syntax
        );
        assert_eq!(header.patient_age.as_deref(), Some("004Y"), "{name}");
    }
}

#[test]
fn lossy_jpeg_matches_its_own_stream_decoded_elsewhere() {
    // Baseline JPEG loses detail: the reference is the same stream decoded by Pillow (libjpeg).
    let reference = read_film(&fixture("jpeg_baseline_decoded.png")).expect("reference");
    let film = read_film(&fixture("jpeg_baseline.dcm")).expect("jpeg_baseline.dcm");
    let difference = largest_difference(&film, &reference);
    // Two IDCT implementations: a couple of grey levels apart at most.
    assert!(
        difference <= 2.0 / 255.0 + 1e-5,
        "pixels differ by {difference}"
    );
    let bundle = Bundle::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/mobilenet_v2"),
        &Device::Cpu,
    )
    .expect("bundle");
    let p = |f: &GrayImage| bundle.predict(f).expect("prediction").probability;
    let (a, b) = (p(&film), p(&reference));
    // Two valid decoders of one lossy stream are not bit-identical, and this synthetic film
    // sits where the model is steep: measured 0.0025 apart.
    assert!((a - b).abs() < 5e-3, "DICOM {a} vs reference {b}");
}

#[test]
fn headers_say_what_the_file_holds() {
    let header = |name: &str| {
        read_film_with_header(&fixture(name))
            .expect(name)
            .1
            .expect(name)
    };
    assert_eq!(header("multiframe.dcm").frames, 2);
    assert_eq!(header("explicit_le_12bit.dcm").bits_stored, 12);
    assert_eq!(header("monochrome1.dcm").photometric, "MONOCHROME1");
    assert_eq!(header("rle.dcm").transfer_syntax, "1.2.840.10008.1.2.5");
    assert_eq!(
        header("jpeg_lossless.dcm").transfer_syntax,
        "1.2.840.10008.1.2.4.70"
    );
    assert_eq!(
        header("deflate.dcm").transfer_syntax,
        "1.2.840.10008.1.2.1.99"
    );
    assert_eq!(header("no_meta.dcm").transfer_syntax, "1.2.840.10008.1.2");
    assert_eq!(
        header("jpeg2000_16bit.dcm").transfer_syntax,
        "1.2.840.10008.1.2.4.90"
    );
    assert_eq!(
        header("explicit_le_8bit.dcm").view_position.as_deref(),
        Some("AP")
    );
}

#[test]
fn a_narrow_window_follows_the_standards_linear_function() {
    // PS3.3 C.11.2.1.2.1 with centre 100 and width 120, on the 8-bit stored values.
    let base = read_film(&fixture("base.png")).expect("base.png");
    let (c, w) = (100.0f32, 120.0f32);
    let expected = GrayImage::from_fn(base.width(), base.height(), |x, y| {
        let v = (base.get_pixel(x, y)[0] * 255.0).round();
        let value = if v <= c - 0.5 - (w - 1.0) / 2.0 {
            0.0
        } else if v > c - 0.5 + (w - 1.0) / 2.0 {
            1.0
        } else {
            (v - (c - 0.5)) / (w - 1.0) + 0.5
        };
        image::Luma([value])
    });
    let film = read_film(&fixture("window_narrow.dcm")).expect("window_narrow.dcm");
    let difference = largest_difference(&film, &expected);
    assert!(difference <= 1e-5, "window: pixels differ by {difference}");
}

#[test]
fn broken_files_are_refused_naming_the_file_and_the_fault() {
    for (name, fault) in [
        ("truncated.dcm", "declares 9216 bytes"),
        ("no_pixel_data.dcm", "pixel data"),
        ("huge_declared.dcm", "60000 x 60000"),
        // Found by the fuzzer (`fuzz_decode --dump 130`): it panicked dicom-rs's RLE reader;
        // the length check now refuses it first (and a panic would be caught, not passed on).
        ("fuzz_rle_panic.dcm", "declares 9656 bytes"),
        // Input 897770 of the million-input run: Bits Stored 0 made dicom-pixeldata assert.
        ("fuzz_bits_stored_panic.dcm", "Bits Stored 0"),
    ] {
        let error = read_film(&fixture(name)).expect_err(name).to_string();
        assert!(error.contains(name), "{name}: {error}");
        assert!(error.contains(fault), "{name}: {error}");
    }
}

#[test]
fn a_jpeg_stream_larger_than_its_data_set_is_refused_before_decoding() {
    let mut bytes = std::fs::read(fixture("jpeg_baseline.dcm")).unwrap();
    // Inside the JPEG stream, the SOF0 segment: FF C0, length (2), precision (1), height, width.
    let soi = bytes
        .windows(3)
        .position(|w| w == [0xff, 0xd8, 0xff])
        .unwrap();
    let sof = soi
        + bytes[soi..]
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .unwrap();
    bytes[sof + 5..sof + 7].copy_from_slice(&30_000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&30_000u16.to_be_bytes());
    assert_refused_within_a_second("big_stream.dcm", &bytes, "30000 x 30000 pixels");
    // The untouched file still decodes.
    let intact = std::fs::read(fixture("jpeg_baseline.dcm")).unwrap();
    assert!(xray_data::decode_film(Path::new("intact.dcm"), &intact).is_ok());
}

#[test]
fn a_jpeg2000_stream_larger_than_its_data_set_is_refused_before_decoding() {
    let mut bytes = std::fs::read(fixture("jpeg2000_8bit.dcm")).unwrap();
    // SOC then SIZ (FF 4F FF 51), Lsiz, Rsiz, then Xsiz and Ysiz as 32-bit big-endian words.
    let siz = bytes
        .windows(4)
        .position(|w| w == [0xff, 0x4f, 0xff, 0x51])
        .unwrap();
    bytes[siz + 8..siz + 12].copy_from_slice(&50_000u32.to_be_bytes());
    bytes[siz + 12..siz + 16].copy_from_slice(&40_000u32.to_be_bytes());
    assert_refused_within_a_second(
        "big_j2k.dcm",
        &bytes,
        "JPEG 2000 stream declares 40000 x 50000",
    );
}

/// `bytes`, read as the file `name`, are refused in under a second with an error naming the
/// file and saying `fault`.
fn assert_refused_within_a_second(name: &str, bytes: &[u8], fault: &str) {
    let start = std::time::Instant::now();
    let error = xray_data::decode_film(Path::new(name), bytes)
        .unwrap_err()
        .to_string();
    assert!(error.contains(name) && error.contains(fault), "{error}");
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
}
