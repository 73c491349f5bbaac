//! A guard run before dicom-rs parses a file: every element length the file declares must fit
//! in the bytes that follow it. dicom-rs reserves and zeroes a declared length before reading
//! it, so a damaged or hostile header (measured: a 726-byte file declaring 3.7 GB) would cost
//! gigabytes of memory and seconds of time before failing.
//!
//! It walks the data set's element headers only (tags, VRs, lengths, items and delimiters),
//! in explicit or implicit VR little endian; a deflated data set is inflated first, up to
//! [`MAX_INFLATED_BYTES`]. Big endian (retired) is left to dicom-rs.

use std::io::Read;

/// Most bytes a deflated data set may inflate to: a 16-bit 8k x 8k film and room to spare.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Transfer syntaxes whose data set is implicit VR little endian, deflated, or big endian.
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// The length that means "undefined, look for a delimiter".
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Deepest nesting of sequences walked.
const MAX_DEPTH: usize = 32;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// VRs with a 2-byte length in explicit VR; every other (an unknown one too, read as UN, as
/// dicom-rs does) has a 2-byte reserved field and a 4-byte length.
fn long_form(vr: &[u8]) -> bool {
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    !SHORT.iter().any(|s| s.as_slice() == vr)
}

/// Checks the file `bytes`: with `DICM` at 128 (`preamble`), the file meta group and then the
/// data set in the transfer syntax it names; otherwise a bare implicit VR data set.
pub(crate) fn check_declared_lengths(bytes: &[u8], preamble: bool) -> Result<(), String> {
    let (mut at, mut explicit) = (0, false);
    if preamble {
        at = 132;
        let mut syntax = String::new();
        while u16_at(bytes, at) == Some(0x0002) {
            let (header, len) = element_header(bytes, at, true)?;
            let Some(len) = len else {
                return Err("an undefined length in the file meta group".into());
            };
            fits(bytes, at + header, len, at)?;
            if u16_at(bytes, at + 2) == Some(0x0010) {
                let value = &bytes[at + header..at + header + len as usize];
                syntax = String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_string();
            }
            at += header + len as usize;
        }
        match syntax.as_str() {
            EXPLICIT_VR_BIG_ENDIAN => return Ok(()),
            DEFLATED => {
                let mut inflated = Vec::new();
                flate2::read::DeflateDecoder::new(&bytes[at.min(bytes.len())..])
                    .take(MAX_INFLATED_BYTES + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("the deflated data set does not inflate: {e}"))?;
                if inflated.len() as u64 > MAX_INFLATED_BYTES {
                    return Err(format!(
                        "the deflated data set inflates beyond {MAX_INFLATED_BYTES} bytes"
                    ));
                }
                return walk(&inflated, &mut 0, true, 0);
            }
            IMPLICIT_VR_LITTLE_ENDIAN => {}
            _ => explicit = true,
        }
    }
    walk(bytes, &mut at, explicit, 0)
}

/// The header size of the element at `at` and its length (`None` when undefined).
fn element_header(bytes: &[u8], at: usize, explicit: bool) -> Result<(usize, Option<u32>), String> {
    let truncated = || format!("an element header cut short at byte {at}");
    let group = u16_at(bytes, at).ok_or_else(truncated)?;
    let (header, len) = if group == 0xFFFE || !explicit {
        (8, u32_at(bytes, at + 4).ok_or_else(truncated)?)
    } else {
        let vr = bytes.get(at + 4..at + 6).ok_or_else(truncated)?;
        if long_form(vr) {
            (12, u32_at(bytes, at + 8).ok_or_else(truncated)?)
        } else {
            (8, u32::from(u16_at(bytes, at + 6).ok_or_else(truncated)?))
        }
    };
    Ok((header, (len != UNDEFINED).then_some(len)))
}

fn fits(bytes: &[u8], start: usize, len: u32, at: usize) -> Result<(), String> {
    let left = bytes.len().saturating_sub(start);
    if len as usize > left {
        let tag = (
            u16_at(bytes, at).unwrap_or(0),
            u16_at(bytes, at + 2).unwrap_or(0),
        );
        return Err(format!(
            "element ({:04X},{:04X}) at byte {at} declares {len} bytes, but {left} follow",
            tag.0, tag.1
        ));
    }
    Ok(())
}

/// Walks elements from `at` to the end of the file, or to the delimiter that closes the
/// undefined-length item or sequence being walked.
fn walk(bytes: &[u8], at: &mut usize, explicit: bool, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested more than {MAX_DEPTH} deep"));
    }
    while *at < bytes.len() {
        let start = *at;
        let (header, len) = element_header(bytes, start, explicit)?;
        let (group, element) = (u16_at(bytes, start), u16_at(bytes, start + 2));
        *at += header;
        if group == Some(0xFFFE) && matches!(element, Some(0xE00D | 0xE0DD)) {
            return Ok(());
        }
        match len {
            Some(len) => {
                fits(bytes, *at, len, start)?;
                *at += len as usize;
            }
            // An undefined-length sequence, item or encapsulated pixel data: walk inside.
            None => walk(bytes, at, explicit, depth + 1)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An implicit VR element: tag, 4-byte length, value.
    fn implicit(group: u16, element: u16, value: &[u8]) -> Vec<u8> {
        let mut out = group.to_le_bytes().to_vec();
        out.extend(element.to_le_bytes());
        out.extend((value.len() as u32).to_le_bytes());
        out.extend(value);
        out
    }

    #[test]
    fn a_length_beyond_the_file_is_refused_naming_the_element() {
        let mut bytes = implicit(0x0008, 0x0016, b"1.2.3\0");
        bytes.extend(implicit(0x0010, 0x0010, b"DOE^J"));
        assert!(check_declared_lengths(&bytes, false).is_ok());
        let mut hostile = bytes.clone();
        hostile.extend([0x28, 0x00, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2]);
        let error = check_declared_lengths(&hostile, false).unwrap_err();
        assert!(
            error.contains("(0028,0010)") && error.contains("2147483647"),
            "{error}"
        );
    }

    #[test]
    fn undefined_length_sequences_are_walked_inside() {
        let mut bytes = implicit(0x0008, 0x0016, b"1.2.3\0");
        // (0008,1140) SQ, undefined length; one undefined-length item holding one element.
        bytes.extend([0x08, 0x00, 0x40, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        let inner = implicit(0x0008, 0x1150, b"1.2\0");
        bytes.extend(&inner);
        bytes.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        bytes.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        bytes.extend(implicit(0x0010, 0x0010, b"DOE^J"));
        assert!(check_declared_lengths(&bytes, false).is_ok());
        // The same with the inner element's length blown up.
        let at = bytes
            .windows(4)
            .position(|w| w == [0x08, 0x00, 0x50, 0x11])
            .unwrap();
        bytes[at + 4..at + 8].copy_from_slice(&0x4000_0000u32.to_le_bytes());
        let error = check_declared_lengths(&bytes, false).unwrap_err();
        assert!(error.contains("(0008,1150)"), "{error}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut bytes = Vec::new();
        for _ in 0..40 {
            bytes.extend([0x08, 0x00, 0x40, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert!(check_declared_lengths(&bytes, false)
            .unwrap_err()
            .contains("nested"));
    }
}
