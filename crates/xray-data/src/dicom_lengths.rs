//! A guard run before dicom-rs parses a file: every element length the file declares must fit
//! in the bytes that follow it. dicom-rs reserves and zeroes a declared length before reading
//! it, so a damaged or hostile header (measured: a 726-byte file declaring 3.7 GB) would cost
//! gigabytes of memory and seconds of time before failing.
//!
//! It walks the data set's element headers only (tags, VRs, lengths, items and delimiters),
//! in explicit or implicit VR little endian and in explicit VR big endian (retired); a deflated
//! data set is inflated first, up to [`MAX_INFLATED_BYTES`].

use std::io::Read;

/// Most bytes a deflated data set may inflate to: a 16-bit 8k x 8k film and room to spare.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Transfer syntaxes whose data set is implicit VR little endian, deflated, or big endian
/// (retired, but still in old archives: its lengths are walked big endian).
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// The length that means "undefined, look for a delimiter".
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Deepest nesting of sequences walked.
const MAX_DEPTH: usize = 32;

/// How the data set's numbers and VRs are written.
#[derive(Clone, Copy)]
struct Encoding {
    explicit: bool,
    big_endian: bool,
}

const LITTLE_EXPLICIT: Encoding = Encoding {
    explicit: true,
    big_endian: false,
};

impl Encoding {
    fn u16_at(self, bytes: &[u8], at: usize) -> Option<u16> {
        let b = [*bytes.get(at)?, *bytes.get(at + 1)?];
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(self, bytes: &[u8], at: usize) -> Option<u32> {
        let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
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
    let mut at = 0;
    let mut encoding = Encoding {
        explicit: false,
        big_endian: false,
    };
    if preamble {
        at = 132;
        let mut syntax = String::new();
        while LITTLE_EXPLICIT.u16_at(bytes, at) == Some(0x0002) {
            let (header, len) = element_header(bytes, at, LITTLE_EXPLICIT)?;
            let Some(len) = len else {
                return Err("an undefined length in the file meta group".into());
            };
            fits(bytes, at + header, len, at, LITTLE_EXPLICIT)?;
            if LITTLE_EXPLICIT.u16_at(bytes, at + 2) == Some(0x0010) {
                let value = &bytes[at + header..at + header + len as usize];
                syntax = String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_string();
            }
            at += header + len as usize;
        }
        match syntax.as_str() {
            EXPLICIT_VR_BIG_ENDIAN => {
                encoding = Encoding {
                    explicit: true,
                    big_endian: true,
                }
            }
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
                return walk(&inflated, &mut 0, inflated.len(), LITTLE_EXPLICIT, 0, false);
            }
            IMPLICIT_VR_LITTLE_ENDIAN => {}
            _ => encoding.explicit = true,
        }
    }
    walk(bytes, &mut at, bytes.len(), encoding, 0, false)
}

/// The header size of the element at `at` and its length (`None` when undefined).
fn element_header(
    bytes: &[u8],
    at: usize,
    encoding: Encoding,
) -> Result<(usize, Option<u32>), String> {
    let truncated = || format!("an element header cut short at byte {at}");
    let group = encoding.u16_at(bytes, at).ok_or_else(truncated)?;
    let (header, len) = if group == 0xFFFE || !encoding.explicit {
        (8, encoding.u32_at(bytes, at + 4).ok_or_else(truncated)?)
    } else {
        let vr = bytes.get(at + 4..at + 6).ok_or_else(truncated)?;
        if long_form(vr) {
            (12, encoding.u32_at(bytes, at + 8).ok_or_else(truncated)?)
        } else {
            let len = encoding.u16_at(bytes, at + 6).ok_or_else(truncated)?;
            (8, u32::from(len))
        }
    };
    Ok((header, (len != UNDEFINED).then_some(len)))
}

fn fits(bytes: &[u8], start: usize, len: u32, at: usize, encoding: Encoding) -> Result<(), String> {
    let left = bytes.len().saturating_sub(start);
    if len as usize > left {
        let tag = (
            encoding.u16_at(bytes, at).unwrap_or(0),
            encoding.u16_at(bytes, at + 2).unwrap_or(0),
        );
        return Err(format!(
            "element ({:04X},{:04X}) at byte {at} declares {len} bytes, but {left} follow",
            tag.0, tag.1
        ));
    }
    Ok(())
}

/// Walks elements from `at` to `end`, or to the delimiter that closes the undefined-length item
/// or sequence being walked. Sequences and their items are walked inside, whether their length
/// is defined or not, because dicom-rs reads them eagerly (found by the fuzzer: a damaged VR
/// inside a defined-length sequence made it reserve 1.9 GB). The items of encapsulated pixel
/// data (`fragments`) hold compressed bytes, not elements, and are only checked to fit.
fn walk(
    bytes: &[u8],
    at: &mut usize,
    end: usize,
    encoding: Encoding,
    depth: usize,
    fragments: bool,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("sequences nested more than {MAX_DEPTH} deep"));
    }
    let bytes = &bytes[..end];
    while *at < end {
        let start = *at;
        let (header, len) = element_header(bytes, start, encoding)?;
        let (group, element) = (
            encoding.u16_at(bytes, start),
            encoding.u16_at(bytes, start + 2),
        );
        *at += header;
        if group == Some(0xFFFE) && matches!(element, Some(0xE00D | 0xE0DD)) {
            return Ok(());
        }
        match len {
            Some(len) => {
                fits(bytes, *at, len, start, encoding)?;
                let value_end = *at + len as usize;
                let item = group == Some(0xFFFE);
                let sequence = if encoding.explicit && !item {
                    bytes.get(start + 4..start + 6) == Some(b"SQ".as_slice())
                } else {
                    // Implicit VR says nothing of the type: a value opening with an item tag
                    // is read as a sequence, as dicom-rs's dictionary would have it.
                    !item && bytes.get(*at..*at + 4) == Some([0xFE, 0xFF, 0x00, 0xE0].as_slice())
                };
                if (item && !fragments) || sequence {
                    let mut inside = *at;
                    walk(bytes, &mut inside, value_end, encoding, depth + 1, false)?;
                }
                *at = value_end;
            }
            // An undefined-length sequence, item or encapsulated pixel data: walk inside.
            None => {
                let pixel_data = (group, element) == (Some(0x7FE0), Some(0x0010));
                walk(bytes, at, end, encoding, depth + 1, pixel_data)?;
            }
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
        assert_inner_length_refused(&mut bytes, 0x4000_0000);
    }

    /// Sets the length of the (0008,1150) element in `bytes` to `len` and checks that the file
    /// is then refused naming that element.
    fn assert_inner_length_refused(bytes: &mut [u8], len: u32) {
        let at = bytes
            .windows(4)
            .position(|w| w == [0x08, 0x00, 0x50, 0x11])
            .unwrap();
        bytes[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
        let error = check_declared_lengths(bytes, false).unwrap_err();
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

    #[test]
    fn defined_length_sequences_and_items_are_walked_inside() {
        // (0008,1140) holding one defined-length item holding one element, all lengths defined.
        let inner = implicit(0x0008, 0x1150, b"1.2\0");
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend((inner.len() as u32).to_le_bytes());
        item.extend(&inner);
        let mut bytes = implicit(0x0008, 0x0016, b"1.2.3\0");
        bytes.extend(implicit(0x0008, 0x1140, &item));
        bytes.extend(implicit(0x0010, 0x0010, b"DOE^J"));
        assert!(check_declared_lengths(&bytes, false).is_ok());
        // The inner element now claims more than its item holds, yet less than the file.
        assert_inner_length_refused(&mut bytes, 10);
    }

    #[test]
    fn pixel_data_fragments_are_not_read_as_elements() {
        // Encapsulated pixel data: an empty offset table, then one fragment whose bytes would
        // read as an element declaring 4 GB if walked inside.
        let mut bytes = implicit(0x0008, 0x0016, b"1.2.3\0");
        bytes.extend([0xE0, 0x7F, 0x10, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        let fragment = [0x08, 0x00, 0x50, 0x11, 0xF0, 0xFF, 0xFF, 0xFF];
        bytes.extend([0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0]);
        bytes.extend(fragment);
        bytes.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert!(check_declared_lengths(&bytes, false).is_ok());
    }

    #[test]
    fn big_endian_lengths_are_read_big_endian() {
        let mut bytes = vec![0u8; 128];
        bytes.extend(b"DICM");
        let syntax = b"1.2.840.10008.1.2.2\0";
        bytes.extend([0x02, 0x00, 0x10, 0x00, b'U', b'I', syntax.len() as u8, 0x00]);
        bytes.extend(syntax);
        // (0010,0010) PN "DOE^J " then (7FE0,0010) OB of 4 bytes, both big endian.
        bytes.extend([0x00, 0x10, 0x00, 0x10, b'P', b'N', 0x00, 0x06]);
        bytes.extend(b"DOE^J ");
        bytes.extend([
            0x7F, 0xE0, 0x00, 0x10, b'O', b'B', 0, 0, 0x00, 0x00, 0x00, 0x04,
        ]);
        bytes.extend([1, 2, 3, 4]);
        assert!(check_declared_lengths(&bytes, true).is_ok());
        // 0x7000_0004 bytes declared: read little endian it would have been 0x0400_0070.
        let last = bytes.len() - 8;
        bytes[last] = 0x70;
        let error = check_declared_lengths(&bytes, true).unwrap_err();
        assert!(
            error.contains("(7FE0,0010)") && error.contains("1879048196"),
            "{error}"
        );
    }
}
