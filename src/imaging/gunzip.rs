//! Whole-buffer gzip inflation with libdeflate, for a file whose inflated size is known
//! before inflating (from its NIfTI header and gzip trailer); about twice as fast as a
//! streaming inflater on brain volumes (docs/benchmarks.md).

use std::ptr::NonNull;

use libdeflate_sys as sys;

/// A libdeflate decompressor, freed on drop.
struct Decompressor(NonNull<sys::libdeflate_decompressor>);

impl Decompressor {
    fn new() -> Option<Self> {
        // SAFETY: no preconditions; a null result (out of memory) is handled.
        NonNull::new(unsafe { sys::libdeflate_alloc_decompressor() }).map(Self)
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from libdeflate_alloc_decompressor and is freed once.
        unsafe { sys::libdeflate_free_decompressor(self.0.as_ptr()) }
    }
}

/// Inflates `input` into a buffer of `capacity` bytes when `input` is exactly one valid
/// gzip member (its CRC32 and size trailer checked) whose data fits; returns what it
/// wrote. `None` for anything else (corrupt data, more than `capacity`, bytes after the
/// member such as further members): the caller's streaming inflater then decides and
/// explains. The buffer is not zeroed first: libdeflate writes it through a pointer,
/// and only the bytes it reports written become the vector's contents (zeroing a 1 mm
/// volume's 14 MB cost 2-3% of an import).
pub fn inflate_single_member(input: &[u8], capacity: usize) -> Option<Vec<u8>> {
    let decompressor = Decompressor::new()?;
    let mut out: Vec<u8> = Vec::with_capacity(capacity);
    let mut read = 0usize;
    let mut written = 0usize;
    // SAFETY: the pointers and lengths describe live, non-overlapping memory: `input`,
    // and `out`'s spare capacity of `capacity` bytes, which libdeflate only writes
    // (never reads); it reads at most `input.len()` bytes, writes at most `capacity`
    // bytes and reports both counts.
    let result = unsafe {
        sys::libdeflate_gzip_decompress_ex(
            decompressor.0.as_ptr(),
            input.as_ptr().cast(),
            input.len(),
            out.spare_capacity_mut().as_mut_ptr().cast(),
            capacity,
            &mut read,
            &mut written,
        )
    };
    if result != sys::libdeflate_result_LIBDEFLATE_SUCCESS || read != input.len() {
        return None;
    }
    // SAFETY: libdeflate succeeded, having written `written <= capacity` bytes from the
    // start of the buffer.
    unsafe { out.set_len(written.min(capacity)) };
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn one_whole_member_inflates_anything_else_is_left_to_the_caller() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let packed = gzip(&data);
        assert_eq!(
            inflate_single_member(&packed, data.len()),
            Some(data.clone())
        );
        // Room to spare: the bytes written, no more.
        assert_eq!(
            inflate_single_member(&packed, data.len() + 100),
            Some(data.clone())
        );
        assert_eq!(inflate_single_member(&packed, 0), None);
        // Too little room, a second member, trailing garbage, a flipped CRC, truncation.
        assert_eq!(inflate_single_member(&packed, data.len() - 1), None);
        let mut two = packed.clone();
        two.extend_from_slice(&gzip(b"more"));
        assert_eq!(inflate_single_member(&two, data.len() + 4), None);
        let mut trailing = packed.clone();
        trailing.push(0);
        assert_eq!(inflate_single_member(&trailing, data.len()), None);
        let mut bad_crc = packed.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 1;
        assert_eq!(inflate_single_member(&bad_crc, data.len()), None);
        assert_eq!(
            inflate_single_member(&packed[..packed.len() / 2], data.len()),
            None
        );
    }
}
