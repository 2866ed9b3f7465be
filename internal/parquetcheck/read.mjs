// Reads Parquet files with hyparquet, a reader independent of the one that
// wrote them, and prints their rows as one JSON document:
//
//   {"rows": [{"file": "...", "trace_id": "...", ...}, ...]}
//
// Strings are decoded strictly: a file holding a string that is not valid
// UTF-8 fails the read (exit status 1), as it fails in DuckDB. 64-bit
// integers are printed as decimal strings, timestamps as their raw number,
// so no value is rounded on the way.
//
// Usage: node read.mjs FILE...
import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet'
import { compressors } from 'hyparquet-compressors'

const strict = new TextDecoder('utf-8', { fatal: true })
const parsers = {
  stringFromBytes: (bytes) => bytes && strict.decode(bytes),
  timestampFromMilliseconds: (v) => String(v),
  timestampFromMicroseconds: (v) => String(v),
  timestampFromNanoseconds: (v) => String(v),
}

const rows = []
for (const file of process.argv.slice(2)) {
  try {
    const buf = await asyncBufferFromFile(file)
    for (const row of await parquetReadObjects({ file: buf, compressors, parsers })) {
      rows.push({ file, ...row })
    }
  } catch (err) {
    process.stderr.write(`${file}: ${err.message}\n`)
    process.exit(1)
  }
}
process.stdout.write(JSON.stringify({ rows }, (_, v) => (typeof v === 'bigint' ? v.toString() : v)))
