// The verify header (magic, length, offset, seed, CRC-32C) lives in the
// VioFioVerify library, so the fuzz target fuzz-verify-header links the same
// parser vio-fio uses; re-exported here for the rest of vio-fio.
@_exported import VioFioVerify
