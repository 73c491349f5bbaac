use crate::Label;

/// Derives a patient id from a Kermany-style file name, prefixed by the class.
///
/// - `person1_bacteria_1.jpeg` -> `PNEUMONIA:person1`
/// - `IM-0115-0001.jpeg` and `IM-0429-0001-0002.jpeg` -> `NORMAL:IM-0115`, `NORMAL:IM-0429`
/// - `NORMAL2-IM-1427-0001.jpeg` -> `NORMAL:NORMAL2-IM-1427`
///
/// Any other name is its own patient (the stem), the safe choice when nothing links images.
///
/// ```
/// use xray_data::{patient_id_from_file_name, Label};
/// assert_eq!(patient_id_from_file_name(Label::Pneumonia, "person12_virus_3.jpeg"), "PNEUMONIA:person12");
/// assert_eq!(patient_id_from_file_name(Label::Normal, "NORMAL2-IM-1427-0001.jpeg"), "NORMAL:NORMAL2-IM-1427");
/// ```
pub fn patient_id_from_file_name(label: Label, file_name: &str) -> String {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);
    let id = person_id(stem).or_else(|| series_id(stem)).unwrap_or(stem);
    format!("{}:{}", label.folder_name(), id)
}

/// `personN_<finding>_M` -> `personN`.
fn person_id(stem: &str) -> Option<&str> {
    let head = stem.split('_').next()?;
    let digits = head.strip_prefix("person")?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

/// `[PREFIX-]IM-XXXX-YYYY[-ZZZZ]` -> `[PREFIX-]IM-XXXX` (drops the image numbers).
fn series_id(stem: &str) -> Option<&str> {
    let start = stem.find("IM-")? + "IM-".len();
    let digits = stem[start..].bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| &stem[..start + digits])
}
