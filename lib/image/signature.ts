/**
 * Secure Boot v2 app signatures, made and checked with node:crypto alone, so
 * that signing a build or checking who signed it needs no ESP-IDF Python
 * environment.
 *
 * The format is what `espsecure.py sign_data --version 2` writes: the image,
 * 0xFF padding to the next 4 KiB boundary, then a 4 KiB signature sector
 * holding up to three 1216-byte signature blocks and 0xFF. A block
 * (little endian):
 *
 *   0      magic 0xE7
 *   1      version: 0x02 RSA-PSS, 0x03 ECDSA
 *   2      ECDSA: 0 SHA-256, 1 SHA-384; RSA: 0
 *   4      image digest: SHA-256 (SHA-384 for P-384) of everything before the sector
 *   RSA:   36 n (384), 420 e (u32), 424 rinv = 2^6144 mod n (384), 808 M' = -n^-1 mod 2^32 (u32),
 *          812 the RSA-PSS signature (SHA-256, MGF1 SHA-256, salt 32), byte-reversed
 *   ECDSA with SHA-256: 36 curve id (1 P-192, 2 P-256), 37 X || Y, 101 r || s,
 *          each number little endian, both pairs zero-filled to 64 bytes
 *   ECDSA with SHA-384: 52 curve id 3, 53 X || Y (96), 149 r || s (96)
 *   1196   CRC-32 (zlib) of bytes 0-1195, then 16 zero bytes
 *
 * A device trusts a key by its digest: the SHA-256 of the block's key fields
 * (RSA: n, e, rinv, M'; ECDSA: curve id and point), burnt into eFuse with
 * Secure Boot, or taken from the running app's block 0 when apps are signed
 * without it.
 */

import { constants, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { BleOtaError } from '../errors';

// ---------------------------------------------------------------------------
// Format constants

/** The signature sector starts on this boundary after the image and is this long. */
export const SIGNATURE_SECTOR_SIZE = 4096;
export const SIGNATURE_BLOCK_SIZE = 1216;
/** A sector holds at most three blocks, one per eFuse key slot. */
export const SIGNATURE_MAX_BLOCKS = 3;
const BLOCK_MAGIC = 0xe7;
const VERSION_RSA = 0x02;
const VERSION_ECDSA = 0x03;
const ECDSA_SHA_256 = 0;
const ECDSA_SHA_384 = 1;
const DIGEST_AT = 4;
const CRC_AT = 1196;

const RSA_BITS = 3072;
const RSA_BYTES = RSA_BITS / 8;
/** n, e, rinv, M': the RSA key fields, from offset 36. */
const RSA_KEY_LENGTH = RSA_BYTES + 4 + RSA_BYTES + 4;
const RSA_SALT_LENGTH = 32;

/** The schemes a Secure Boot v2 block can carry, named as espsecure.py names them. */
export type SignatureScheme = 'rsa3072' | 'ecdsa192' | 'ecdsa256' | 'ecdsa384';

/** The schemes `generateSigningKey` makes: those every Secure Boot v2 chip that has one supports. */
export type KeyScheme = 'rsa3072' | 'ecdsa256';

interface Curve {
  readonly scheme: SignatureScheme;
  /** OpenSSL's name, as node:crypto reports it. */
  readonly openssl: string;
  readonly id: number;
  /** Bytes per coordinate (and per r and s). */
  readonly size: number;
  readonly hash: 'sha256' | 'sha384';
  /** DER of SubjectPublicKeyInfo up to the uncompressed point (0x04 X Y). */
  readonly spkiPrefix: Buffer;
}

const CURVES: readonly Curve[] = [
  { scheme: 'ecdsa192', openssl: 'prime192v1', id: 1, size: 24, hash: 'sha256', spkiPrefix: Buffer.from('3049301306072a8648ce3d020106082a8648ce3d030101033200', 'hex') },
  { scheme: 'ecdsa256', openssl: 'prime256v1', id: 2, size: 32, hash: 'sha256', spkiPrefix: Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex') },
  { scheme: 'ecdsa384', openssl: 'secp384r1', id: 3, size: 48, hash: 'sha384', spkiPrefix: Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex') },
];

/** Where an ECDSA block keeps its fields: the SHA-384 layout is shifted by the longer digest. */
function ecdsaLayout(hash: 'sha256' | 'sha384') {
  const digestLength = hash === 'sha256' ? 32 : 48;
  const keyAt = DIGEST_AT + digestLength;
  const pairLength = hash === 'sha256' ? 64 : 96;
  return { digestLength, keyAt, keyLength: 1 + pairLength, signatureAt: keyAt + 1 + pairLength, pairLength };
}

// ---------------------------------------------------------------------------
// Types

/** What a valid block of a signature sector says. */
export interface SignatureBlockInfo {
  /** Slot in the sector, 0-2. ESP-IDF's update check without Secure Boot reads slot 0 only. */
  readonly index: number;
  readonly scheme: SignatureScheme;
  /** The image digest the block was signed over, as stored in it. */
  readonly imageDigest: Buffer;
  /** SHA-256 of the block's key fields: the value a device trusts. */
  readonly keyDigest: Buffer;
}

export interface SignatureSector {
  /** File offset of the sector: the image length rounded up to 4 KiB. */
  readonly offset: number;
  /** The valid blocks (magic, known version, CRC) among the three slots, in slot order. */
  readonly blocks: readonly SignatureBlockInfo[];
}

/** What a key can do and which digest a device would trust it by. */
export interface SigningKeyInfo {
  readonly scheme: SignatureScheme;
  /** True for a private key (it can sign), false for a public one. */
  readonly isPrivate: boolean;
  readonly keyDigest: Buffer;
}

/** Why an image does not verify, in the order a device finds out. */
export type SignatureFailure = 'unsigned' | 'untrusted' | 'digest-mismatch' | 'bad-signature';

export type SignatureVerification =
  | {
      readonly ok: true;
      /** The block that verified. */
      readonly index: number;
      readonly scheme: SignatureScheme;
      readonly keyDigest: Buffer;
    }
  | {
      readonly ok: false;
      /** No valid block (by default: no valid block 0). */
      readonly reason: 'unsigned';
      readonly message: string;
    }
  | {
      readonly ok: false;
      /** The block is signed with another key. */
      readonly reason: 'untrusted';
      readonly message: string;
      readonly index: number;
      /** The digest of the key the block names. */
      readonly keyDigest: Buffer;
      readonly trustedKeyDigest: Buffer;
    }
  | {
      readonly ok: false;
      /** The image is not the one the block was signed over: changed, or padded differently. */
      readonly reason: 'digest-mismatch';
      readonly message: string;
      readonly index: number;
      readonly signedDigest: Buffer;
      readonly imageDigest: Buffer;
    }
  | {
      readonly ok: false;
      /** Key and digest are right but the signature is not: a damaged or forged block. */
      readonly reason: 'bad-signature';
      readonly message: string;
      readonly index: number;
    };

// ---------------------------------------------------------------------------
// Keys

/**
 * A new signing key as `espsecure.py generate_signing_key --version 2` makes
 * it, in the same PEM (traditional "RSA/EC PRIVATE KEY"), so that ESP-IDF's
 * CONFIG_SECURE_BOOT_SIGNING_KEY and espsecure.py read it as their own.
 * RSA-3072 is the default there and the only scheme the original ESP32 has.
 */
export function generateSigningKey(scheme: KeyScheme): string {
  if (scheme === 'rsa3072') {
    return generateKeyPairSync('rsa', {
      modulusLength: RSA_BITS,
      publicExponent: 65537,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    }).privateKey;
  }
  if (scheme === 'ecdsa256') {
    return generateKeyPairSync('ec', {
      namedCurve: 'prime256v1',
      privateKeyEncoding: { type: 'sec1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    }).privateKey;
  }
  throw new BleOtaError('INVALID_ARGUMENT', `Unknown key scheme "${String(scheme)}": it is rsa3072 or ecdsa256.`);
}

/**
 * The public half of a key as SPKI PEM ("BEGIN PUBLIC KEY"), what
 * `espsecure.py extract_public_key --version 2` writes: the file to hand to
 * whoever verifies, while the private key stays with whoever signs.
 */
export function publicKeyPem(keyPem: string): string {
  return loadKey(keyPem).publicKey.export({ type: 'spki', format: 'pem' }).toString();
}

/**
 * The digest a device trusts this key by (espsecure.py
 * `digest_sbv2_public_key`): what Secure Boot burns into eFuse, and what a
 * block signed with the key carries. Takes a private or a public key.
 */
export function signingKeyDigest(keyPem: string): Buffer {
  return sha256(loadKey(keyPem).fields);
}

/** Scheme, kind and digest of a key, so a caller can refuse a public key before signing. */
export function signingKeyInfo(keyPem: string): SigningKeyInfo {
  const key = loadKey(keyPem);
  return { scheme: key.scheme, isPrivate: key.privateKey !== undefined, keyDigest: sha256(key.fields) };
}

interface LoadedKey {
  readonly scheme: SignatureScheme;
  readonly privateKey?: KeyObject;
  readonly publicKey: KeyObject;
  readonly curve?: Curve;
  /** The key as a block stores it: the bytes the key digest covers. */
  readonly fields: Buffer;
}

const KEY_LABELS = ['RSA PRIVATE KEY', 'EC PRIVATE KEY', 'PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'PUBLIC KEY', 'RSA PUBLIC KEY'];

/**
 * Reads a PEM key and checks that Secure Boot v2 can use it. Messages never
 * quote the input: it may be a private key.
 */
function loadKey(pem: string): LoadedKey {
  if (typeof pem !== 'string') throw keyError('The key must be PEM text.');
  const labels = [...pem.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----/g)].map((m) => m[1]);
  const label = labels.find((l) => KEY_LABELS.includes(l));
  if (label === undefined) {
    throw keyError(
      'This is not a PEM key: it has no "-----BEGIN ... KEY-----" line. Give a key\'s .pem file: the signing key espsecure.py or "esp32-ble-ota keygen" wrote, or the public key "esp32-ble-ota pubkey" writes from it.',
    );
  }
  if (label === 'ENCRYPTED PRIVATE KEY' || /Proc-Type:\s*4,ENCRYPTED/.test(pem)) {
    throw keyError(
      'This private key is encrypted with a passphrase, which espsecure.py does not read either. Store it decrypted (openssl pkey -in KEY -out PLAIN) where only you can read it.',
    );
  }
  const isPrivate = label.includes('PRIVATE');
  let privateKey: KeyObject | undefined;
  let publicKey: KeyObject;
  try {
    privateKey = isPrivate ? createPrivateKey({ key: pem, format: 'pem' }) : undefined;
    publicKey = privateKey ? createPublicKey(privateKey) : createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw keyError(`Its "${label}" block cannot be read: the file is damaged or not a key.`);
  }

  const type = publicKey.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = publicKey.asymmetricKeyDetails?.modulusLength;
    if (bits !== RSA_BITS) {
      throw keyError(`This is an RSA-${bits ?? '?'} key; Secure Boot v2 signs with RSA-3072 keys only.`);
    }
    return { scheme: 'rsa3072', privateKey, publicKey, fields: rsaKeyFields(publicKey) };
  }
  if (type === 'ec') {
    const name = publicKey.asymmetricKeyDetails?.namedCurve;
    const curve = CURVES.find((c) => c.openssl === name);
    if (curve === undefined) {
      throw keyError(`This is an ECDSA key on the curve ${name ?? '(unknown)'}; Secure Boot v2 takes P-192, P-256 and P-384 only.`);
    }
    return { scheme: curve.scheme, privateKey, publicKey, curve, fields: ecdsaKeyFields(publicKey, curve) };
  }
  throw keyError(`This is an ${type ?? 'unknown'} key; Secure Boot v2 takes RSA-3072 and ECDSA keys only.`);
}

function keyError(message: string): BleOtaError {
  return new BleOtaError('INVALID_ARGUMENT', message);
}

/** n, e, rinv and M', as the ESP32's RSA peripheral wants them (little endian). */
function rsaKeyFields(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  const n = bigFromBytes(Buffer.from(jwk.n as string, 'base64url'));
  const e = Number(bigFromBytes(Buffer.from(jwk.e as string, 'base64url')));
  const rinv = (1n << BigInt(2 * RSA_BITS)) % n;
  const fields = Buffer.alloc(RSA_KEY_LENGTH);
  littleEndian(n, RSA_BYTES).copy(fields, 0);
  fields.writeUInt32LE(e, RSA_BYTES);
  littleEndian(rinv, RSA_BYTES).copy(fields, RSA_BYTES + 4);
  fields.writeUInt32LE(montgomeryFactor(n), 2 * RSA_BYTES + 4);
  return fields;
}

/** M' = -n^-1 mod 2^32, the Montgomery multiplication constant. */
function montgomeryFactor(n: bigint): number {
  const mod = 1n << 32n;
  const n0 = n % mod;
  // Newton's iteration: each step doubles the correct low bits (3 to start, for odd n).
  let inv = n0;
  for (let i = 0; i < 5; i++) inv = (inv * (2n - ((n0 * inv) % mod))) % mod;
  inv = ((inv % mod) + mod) % mod;
  return Number((mod - inv) % mod);
}

/** Curve id, then X and Y little endian, zero-filled to the layout's pair length. */
function ecdsaKeyFields(key: KeyObject, curve: Curve): Buffer {
  const der = key.export({ type: 'spki', format: 'der' });
  const point = der.subarray(curve.spkiPrefix.length);
  if (!der.subarray(0, curve.spkiPrefix.length).equals(curve.spkiPrefix) || point.length !== 1 + 2 * curve.size || point[0] !== 0x04) {
    throw keyError('Its public point cannot be read.');
  }
  const layout = ecdsaLayout(curve.hash);
  const fields = Buffer.alloc(layout.keyLength);
  fields[0] = curve.id;
  reversed(point.subarray(1, 1 + curve.size)).copy(fields, 1);
  reversed(point.subarray(1 + curve.size)).copy(fields, 1 + curve.size);
  return fields;
}

// ---------------------------------------------------------------------------
// Signing

/**
 * Signs an app image as `espsecure.py sign_data --version 2` does, with one
 * block per key (at most three), and returns the new file: the input padded
 * with 0xFF to 4 KiB, then the signature sector.
 *
 * With `append`, the valid blocks of an already signed file (its last 4 KiB)
 * are kept and the new ones follow them; the signed contents are then the
 * file without that sector. As in espsecure.py, a file that is not a
 * multiple of 4 KiB, or whose last sector holds no valid block, is signed
 * afresh, and without `append` a signed file is signed whole, old sector
 * included, which leaves the new blocks where no device looks: check first
 * (readSignatureSector) when the input may be signed.
 */
export function signImage(image: Buffer, privateKeysPem: string | readonly string[], options: { append?: boolean } = {}): Buffer {
  const pems = typeof privateKeysPem === 'string' ? [privateKeysPem] : [...privateKeysPem];
  if (pems.length === 0) throw keyError('No signing key given.');
  const keys = pems.map((pem, i) => {
    const which = pems.length > 1 ? `Signing key ${i + 1} of ${pems.length}: ` : '';
    let key: LoadedKey;
    try {
      key = loadKey(pem);
    } catch (err) {
      throw which && err instanceof BleOtaError ? keyError(which + err.message) : err;
    }
    if (key.privateKey === undefined) throw keyError(`${which}This is a public key; signing needs the private key.`);
    return key;
  });

  let contents: Buffer;
  const kept: Buffer[] = [];
  if (image.length % SIGNATURE_SECTOR_SIZE !== 0) {
    contents = Buffer.concat([image, Buffer.alloc(SIGNATURE_SECTOR_SIZE - (image.length % SIGNATURE_SECTOR_SIZE), 0xff)]);
  } else if (options.append && image.length >= SIGNATURE_SECTOR_SIZE) {
    const sectorAt = image.length - SIGNATURE_SECTOR_SIZE;
    for (let i = 0; i < SIGNATURE_MAX_BLOCKS; i++) {
      const at = sectorAt + i * SIGNATURE_BLOCK_SIZE;
      if (parseBlock(image, at, i) === undefined) break;
      kept.push(image.subarray(at, at + SIGNATURE_BLOCK_SIZE));
    }
    contents = kept.length > 0 ? image.subarray(0, sectorAt) : image;
  } else {
    contents = image;
  }
  if (kept.length + keys.length > SIGNATURE_MAX_BLOCKS) {
    const room = SIGNATURE_MAX_BLOCKS - kept.length;
    throw keyError(
      `A signature sector holds ${SIGNATURE_MAX_BLOCKS} blocks; this image has ${kept.length}, ` +
        `so ${room === 0 ? 'no more signature fits' : `at most ${room} more fit`} (${keys.length} key(s) given).`,
    );
  }

  const sector = Buffer.alloc(SIGNATURE_SECTOR_SIZE, 0xff);
  const blocks = [...kept, ...keys.map((key) => signatureBlock(contents, key))];
  blocks.forEach((block, i) => block.copy(sector, i * SIGNATURE_BLOCK_SIZE));
  return Buffer.concat([contents, sector]);
}

function signatureBlock(contents: Buffer, key: LoadedKey): Buffer {
  const block = Buffer.alloc(SIGNATURE_BLOCK_SIZE);
  block[0] = BLOCK_MAGIC;
  const privateKey = key.privateKey as KeyObject;
  if (key.curve === undefined) {
    block[1] = VERSION_RSA;
    sha256(contents).copy(block, DIGEST_AT);
    key.fields.copy(block, DIGEST_AT + 32);
    const signature = cryptoSign('sha256', contents, {
      key: privateKey,
      padding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: RSA_SALT_LENGTH,
    });
    reversed(signature).copy(block, DIGEST_AT + 32 + RSA_KEY_LENGTH);
  } else {
    const curve = key.curve;
    const layout = ecdsaLayout(curve.hash);
    block[1] = VERSION_ECDSA;
    block[2] = curve.hash === 'sha256' ? ECDSA_SHA_256 : ECDSA_SHA_384;
    createHash(curve.hash).update(contents).digest().copy(block, DIGEST_AT);
    key.fields.copy(block, layout.keyAt);
    const rs = cryptoSign(curve.hash, contents, { key: privateKey, dsaEncoding: 'ieee-p1363' });
    reversed(rs.subarray(0, curve.size)).copy(block, layout.signatureAt);
    reversed(rs.subarray(curve.size)).copy(block, layout.signatureAt + curve.size);
  }
  block.writeUInt32LE(crc32(block.subarray(0, CRC_AT)), CRC_AT);
  return block;
}

// ---------------------------------------------------------------------------
// Reading and verifying

/**
 * The signature sector after an image and its valid blocks, where ESP-IDF
 * looks for them: at `imageLength` (parseEspImage's, through the checksum and
 * appended hash) rounded up to 4 KiB.
 */
export function readSignatureSector(file: Buffer, imageLength: number): SignatureSector {
  const { offset, blocks } = readBlocks(file, imageLength);
  return { offset, blocks: blocks.map((b) => b.info) };
}

function readBlocks(file: Buffer, imageLength: number): { offset: number; blocks: ParsedBlock[] } {
  if (!Number.isInteger(imageLength) || imageLength <= 0 || imageLength > file.length) {
    throw new BleOtaError('INVALID_ARGUMENT', `imageLength ${imageLength} is not a length within the ${file.length}-byte file.`);
  }
  const offset = signatureSectorOffset(imageLength);
  const blocks: ParsedBlock[] = [];
  for (let index = 0; index < SIGNATURE_MAX_BLOCKS; index++) {
    const block = parseBlock(file, offset + index * SIGNATURE_BLOCK_SIZE, index);
    if (block) blocks.push(block);
  }
  return { offset, blocks };
}

/** The file offset of the signature sector of an image this long. */
export function signatureSectorOffset(imageLength: number): number {
  return Math.ceil(imageLength / SIGNATURE_SECTOR_SIZE) * SIGNATURE_SECTOR_SIZE;
}

/**
 * Checks an image's signature against one trusted key, as ESP-IDF's update
 * check does when apps are signed without Secure Boot: block 0 only, its key
 * must be the trusted one, its digest the image's, its signature valid.
 * `anyBlock` accepts any valid block instead, as the Secure Boot v2
 * bootloader does with several keys in eFuse.
 *
 * `trusted` names the key by its PEM (private or public) or by its digest
 * (`signingKeyDigest`, or what espsecure.py digest_sbv2_public_key wrote).
 */
export function verifyImageSignature(
  file: Buffer,
  imageLength: number,
  trusted: { publicKeyPem?: string; keyDigest?: Buffer },
  options: { anyBlock?: boolean } = {},
): SignatureVerification {
  const trustedKeyDigest = trustedDigest(trusted);
  const sector = readBlocks(file, imageLength);
  const where = `in the signature sector at 0x${sector.offset.toString(16)}`;
  const candidates = sector.blocks.map((b) => b.info).filter((b) => options.anyBlock || b.index === 0);
  if (candidates.length === 0) {
    const others = sector.blocks.map((b) => b.info.index).join(', ');
    return {
      ok: false,
      reason: 'unsigned',
      message:
        sector.blocks.length === 0
          ? `The image has no valid Secure Boot v2 signature block ${where}, where ESP-IDF looks for it. Sign it (esp32-ble-ota sign, or espsecure.py sign_data --version 2).`
          : `Signature block 0 ${where} is missing or damaged (valid: block ${others}); ESP-IDF's update check reads block 0 only.`,
    };
  }

  const block = candidates.find((b) => b.keyDigest.equals(trustedKeyDigest));
  if (block === undefined) {
    const first = candidates[0];
    const trustedHex = trustedKeyDigest.toString('hex');
    const message =
      candidates.length === 1
        ? `Signature block ${first.index} is made with another key (key digest ${first.keyDigest.toString('hex')}), ` +
          `not the trusted one (${trustedHex}); a device that trusts that key refuses this image.`
        : `No signature block is made with the trusted key (key digest ${trustedHex}): ` +
          candidates.map((b) => `block ${b.index} names key ${b.keyDigest.toString('hex')}`).join(', ') +
          '.';
    return { ok: false, reason: 'untrusted', index: first.index, keyDigest: first.keyDigest, trustedKeyDigest, message };
  }

  const parsed = sector.blocks.find((b) => b.info === block) as ParsedBlock;
  const contents = file.subarray(0, sector.offset);
  const imageDigest = createHash(parsed.hash).update(contents).digest();
  if (!imageDigest.equals(block.imageDigest)) {
    const padding = Buffer.alloc(sector.offset - imageLength, 0xff);
    const repadded = createHash(parsed.hash).update(file.subarray(0, imageLength)).update(padding).digest().equals(block.imageDigest);
    const what = repadded ? `The padding between the image and its signature sector changed after signing (it was 0xFF)` : `The image changed after it was signed`;
    return {
      ok: false,
      reason: 'digest-mismatch',
      index: block.index,
      signedDigest: block.imageDigest,
      imageDigest,
      message:
        `${what}: signature block ${block.index} was made over digest ${block.imageDigest.toString('hex')}, ` +
        `the image now has ${imageDigest.toString('hex')}. Sign the image again, or use the file as it was signed.`,
    };
  }

  if (!parsed.verify(contents)) {
    return {
      ok: false,
      reason: 'bad-signature',
      index: block.index,
      message: `Signature block ${block.index} names the trusted key and the image's digest, but its signature does not ` + `verify: the block is damaged or forged.`,
    };
  }
  return { ok: true, index: block.index, scheme: block.scheme, keyDigest: block.keyDigest };
}

function trustedDigest(trusted: { publicKeyPem?: string; keyDigest?: Buffer }): Buffer {
  const fromKey = trusted.publicKeyPem === undefined ? undefined : signingKeyDigest(trusted.publicKeyPem);
  const given = trusted.keyDigest;
  if (given !== undefined && (!Buffer.isBuffer(given) || given.length !== 32)) {
    throw new BleOtaError('INVALID_ARGUMENT', 'The trusted key digest must be a 32-byte Buffer (a SHA-256).');
  }
  if (fromKey && given && !fromKey.equals(given)) {
    throw new BleOtaError('INVALID_ARGUMENT', 'The trusted key and the trusted key digest name different keys; give one.');
  }
  const digest = fromKey ?? given;
  if (digest === undefined) throw new BleOtaError('INVALID_ARGUMENT', 'No trusted key given: pass its PEM or its digest.');
  return digest;
}

interface ParsedBlock {
  readonly info: SignatureBlockInfo;
  readonly hash: 'sha256' | 'sha384';
  /** Whether the block's signature over `contents` verifies with the block's key. */
  verify(contents: Buffer): boolean;
}

/** A valid block at `at`: magic, a known version and curve, and a matching CRC; else undefined. */
function parseBlock(file: Buffer, at: number, index: number): ParsedBlock | undefined {
  if (at + SIGNATURE_BLOCK_SIZE > file.length || file[at] !== BLOCK_MAGIC) return undefined;
  const block = file.subarray(at, at + SIGNATURE_BLOCK_SIZE);
  if (block.readUInt32LE(CRC_AT) !== crc32(block.subarray(0, CRC_AT))) return undefined;

  if (block[1] === VERSION_RSA) {
    const fields = block.subarray(DIGEST_AT + 32, DIGEST_AT + 32 + RSA_KEY_LENGTH);
    const signatureAt = DIGEST_AT + 32 + RSA_KEY_LENGTH;
    return {
      info: { index, scheme: 'rsa3072', imageDigest: Buffer.from(block.subarray(DIGEST_AT, DIGEST_AT + 32)), keyDigest: sha256(fields) },
      hash: 'sha256',
      verify: (contents) =>
        safely(() =>
          cryptoVerify(
            'sha256',
            contents,
            { key: rsaPublicKey(fields), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: RSA_SALT_LENGTH },
            reversed(block.subarray(signatureAt, signatureAt + RSA_BYTES)),
          ),
        ),
    };
  }
  if (block[1] !== VERSION_ECDSA) return undefined;
  const hash = block[2] === ECDSA_SHA_256 ? 'sha256' : block[2] === ECDSA_SHA_384 ? 'sha384' : undefined;
  if (hash === undefined) return undefined;
  const layout = ecdsaLayout(hash);
  const curve = CURVES.find((c) => c.id === block[layout.keyAt] && c.hash === hash);
  if (curve === undefined) return undefined;
  const fields = block.subarray(layout.keyAt, layout.keyAt + layout.keyLength);
  const sigAt = layout.signatureAt;
  return {
    info: {
      index,
      scheme: curve.scheme,
      imageDigest: Buffer.from(block.subarray(DIGEST_AT, DIGEST_AT + layout.digestLength)),
      keyDigest: sha256(fields),
    },
    hash,
    verify: (contents) =>
      safely(() => {
        const rs = Buffer.concat([reversed(block.subarray(sigAt, sigAt + curve.size)), reversed(block.subarray(sigAt + curve.size, sigAt + 2 * curve.size))]);
        return cryptoVerify(curve.hash, contents, { key: ecdsaPublicKey(fields, curve), dsaEncoding: 'ieee-p1363' }, rs);
      }),
  };
}

/** A block whose key fields are no key cannot verify anything. */
function safely(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false;
  }
}

function rsaPublicKey(fields: Buffer): KeyObject {
  const n = reversed(fields.subarray(0, RSA_BYTES));
  const e = Buffer.alloc(4);
  e.writeUInt32BE(fields.readUInt32LE(RSA_BYTES));
  return createPublicKey({ key: { kty: 'RSA', n: stripZeros(n).toString('base64url'), e: stripZeros(e).toString('base64url') }, format: 'jwk' });
}

function ecdsaPublicKey(fields: Buffer, curve: Curve): KeyObject {
  const x = reversed(fields.subarray(1, 1 + curve.size));
  const y = reversed(fields.subarray(1 + curve.size, 1 + 2 * curve.size));
  const der = Buffer.concat([curve.spkiPrefix, Buffer.from([0x04]), x, y]);
  return createPublicKey({ key: der, format: 'der', type: 'spki' });
}

// ---------------------------------------------------------------------------
// Helpers

/** CRC-32 (IEEE, as zlib) used by Secure Boot v2 signature blocks. */
export function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (let i = 0; i < data.length; i++) crc = CRC_TABLE[(crc ^ data[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const CRC_TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function reversed(data: Buffer): Buffer {
  return Buffer.from(data).reverse();
}

function bigFromBytes(bigEndian: Buffer): bigint {
  return bigEndian.length === 0 ? 0n : BigInt(`0x${bigEndian.toString('hex')}`);
}

function littleEndian(value: bigint, length: number): Buffer {
  const hex = value.toString(16).padStart(length * 2, '0');
  if (hex.length > length * 2) throw new RangeError(`${length}-byte field overflow`);
  return Buffer.from(hex, 'hex').reverse();
}

function stripZeros(bigEndian: Buffer): Buffer {
  let i = 0;
  while (i < bigEndian.length - 1 && bigEndian[i] === 0) i++;
  return bigEndian.subarray(i);
}
