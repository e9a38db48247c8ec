#![no_main]
// The body lives in the library (`ext4box::fuzzing`), where the regression replay calls it too.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ext4box::fuzzing::sparse_image(data));
