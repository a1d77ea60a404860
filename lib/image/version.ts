/**
 * Comparing app versions as ESP-IDF projects write them: "1.4.2",
 * "v2.0.0-rc1", "1.4.2-3-gabc1234" (git describe). Only the leading
 * dotted numbers count; a pre-release suffix ("-rc1", "-beta") sorts
 * before the release. Versions without leading numbers cannot be compared.
 */

interface Parsed {
  numbers: number[];
  prerelease: boolean;
  /** git describe's commits after the tag: "1.2.3-4-gabc" is newer than "1.2.3". */
  commits: number;
}

function parse(version: string): Parsed | undefined {
  const m = /^v?(\d+(?:\.\d+)*)(.*)$/i.exec(version.trim());
  if (!m) return undefined;
  // "-3-gabc1234" (commits after a tag) is not a pre-release; "-rc1" is.
  const rest = m[2];
  const described = /^-(\d+)-g[0-9a-f]+/i.exec(rest);
  const prerelease = !described && rest.startsWith('-');
  return { numbers: m[1].split('.').map(Number), prerelease, commits: described ? Number(described[1]) : 0 };
}

/** <0 when a is older than b, 0 when equal, >0 when newer; undefined when either cannot be read. */
export function compareVersions(a: string, b: string): number | undefined {
  const pa = parse(a);
  const pb = parse(b);
  if (!pa || !pb) return undefined;
  const n = Math.max(pa.numbers.length, pb.numbers.length);
  for (let i = 0; i < n; i++) {
    const d = (pa.numbers[i] ?? 0) - (pb.numbers[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (pa.prerelease !== pb.prerelease) return pa.prerelease ? -1 : 1;
  return Math.sign(pa.commits - pb.commits);
}
