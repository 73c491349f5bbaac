//! DICOM through dicom-rs, on the real chest film of `../shared/data/dicom` (JPEG baseline,
//! 8-bit, 1024x1024) and its MONOCHROME1 twin (the same stored pixels, the tag changed, so a
//! correct reader returns the inverse): the header fields read, and damaged files refused by
//! name without a panic.

use std::path::{Path, PathBuf};

use xray_data::{decode_dicom, decode_gray, is_dicom, DataError, MAX_DICOM_PIXELS};

fn dicom_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/dicom")
}

fn read(name: &str) -> (PathBuf, Vec<u8>) {
    let path = dicom_dir().join(name);
    let bytes = std::fs::read(&path).expect("shared DICOM fixture");
    (path, bytes)
}

#[test]
fn monochrome1_is_read_inverted() {
    let (p2, b2) = read("cxr_pa_monochrome2.dcm");
    let (p1, b1) = read("cxr_pa_monochrome1_synthetic.dcm");
    let (m2, info2) = decode_dicom(&p2, &b2).expect("MONOCHROME2");
    let (m1, info1) = decode_dicom(&p1, &b1).expect("MONOCHROME1");
    assert_eq!(m2.dimensions(), (1024, 1024));
    assert_eq!(
        (info1.photometric.as_str(), info2.photometric.as_str()),
        ("MONOCHROME1", "MONOCHROME2")
    );
    assert_eq!(
        info2.transfer_syntax, "1.2.840.10008.1.2.4.50",
        "JPEG baseline"
    );
    assert_eq!(info2.frames, 1);
    assert!(info2.sop_uid.is_some() && info2.study_uid.is_some());
    // The same stored values under MONOCHROME1 mean the inverse intensities.
    let worst = m1
        .as_raw()
        .iter()
        .zip(m2.as_raw())
        .map(|(a, b)| (a + b - 1.0).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "largest departure from the inverse {worst}");
    let range = m2
        .as_raw()
        .iter()
        .fold((1.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(
        range.0 >= 0.0 && range.1 <= 1.0 && range.1 - range.0 > 0.5,
        "{range:?}"
    );
    // A chest film: the lung fields (upper middle thirds) are darker than the mediastinum.
    let mean = |x0: u32, x1: u32| {
        let (y0, y1) = (300, 600);
        let mut sum = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += m2.get_pixel(x, y)[0] as f64;
            }
        }
        sum / ((x1 - x0) * (y1 - y0)) as f64
    };
    assert!(
        mean(200, 350) < mean(460, 560),
        "lungs darker than the spine"
    );
}

#[test]
fn decode_gray_recognises_dicom_by_content() {
    let (path, bytes) = read("cxr_pa_monochrome2.dcm");
    assert!(is_dicom(&bytes));
    let renamed = Path::new("film.jpeg");
    let film = decode_gray(renamed, &bytes).expect("DICOM named .jpeg");
    assert_eq!(film, decode_dicom(&path, &bytes).expect("DICOM").0);
}

#[test]
fn damaged_dicom_is_refused_by_name() {
    let (_, bytes) = read("cxr_pa_monochrome2.dcm");
    let name = Path::new("damaged.dcm");
    for cut in [
        0,
        100,
        131,
        132,
        400,
        2_000,
        bytes.len() / 2,
        bytes.len() - 10,
    ] {
        let err = decode_gray(name, &bytes[..cut]).expect_err("truncated");
        assert!(err.to_string().contains("damaged.dcm"), "cut {cut}: {err}");
    }
    // Pixel data missing: everything from the Pixel Data element on is cut.
    let pixel_data = bytes
        .windows(4)
        .rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .expect("Pixel Data tag");
    let err = decode_dicom(name, &bytes[..pixel_data]).expect_err("no pixel data");
    assert!(matches!(err, DataError::Dicom { .. }), "{err}");
}

#[test]
fn a_huge_declared_size_is_refused_before_decoding() {
    let (_, mut bytes) = read("cxr_pa_monochrome2.dcm");
    // Rows (0028,0010) and Columns (0028,0011), explicit VR little endian: tag, "US", length 2.
    for element in [0x10u8, 0x11] {
        let header = [0x28, 0x00, element, 0x00, b'U', b'S', 0x02, 0x00];
        let at = bytes
            .windows(8)
            .position(|w| w == header)
            .expect("Rows/Columns");
        bytes[at + 8..at + 10].copy_from_slice(&u16::MAX.to_le_bytes());
    }
    let err = decode_dicom(Path::new("bomb.dcm"), &bytes).expect_err("bomb");
    let text = err.to_string();
    assert!(
        text.contains("bomb.dcm") && text.contains("65535"),
        "{text}"
    );
    assert!(u64::from(u16::MAX).pow(2) > MAX_DICOM_PIXELS);
}
