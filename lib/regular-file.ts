/**
 * Reading a file a user named without ever waiting on it: it is looked at
 * before it is opened (opening a device may act on it), opened without
 * waiting (a FIFO that took its place since would otherwise wait for a
 * writer), looked at again, and read only to the size seen then (a file
 * that grows meanwhile is read no further). Synchronous, for callers that
 * cannot wait (a Node-RED node's message handler, the CLI's checks).
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats, statSync } from 'node:fs';

/**
 * The file's bytes; `check` sees the file before and after it is opened and
 * throws to refuse it (it must refuse anything but a regular file). The file
 * system's errors are thrown as they come (their `code`).
 */
export function readRegularFileSync(file: string, check: (stats: Stats) => void): Buffer {
  check(statSync(file));
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const opened = fstatSync(fd);
    check(opened);
    if (!opened.isFile()) throw new Error(`${file}: not a regular file`); // a check that let one through
    const data = Buffer.alloc(opened.size);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, got);
      if (n === 0) break;
      got += n;
    }
    return data.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}
