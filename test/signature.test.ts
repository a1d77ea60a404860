/**
 * Secure Boot v2 signing and verification (lib/image/signature.ts): the
 * block layout espsecure.py sign_data --version 2 writes, checked byte by
 * byte and against node:crypto directly; every verification failure; key
 * formats and key errors. (Byte-for-byte agreement with espsecure.py itself
 * was checked outside this suite, in both directions.)
 */
import { strict as assert } from 'node:assert';
import { constants, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, verify as cryptoVerify } from 'node:crypto';
import { BleOtaError } from '../lib/errors';
import { buildAppImage } from '../lib/image/app-image-builder';
import { crc32, parseEspImage } from '../lib/image/esp-image';
import {
  generateSigningKey,
  publicKeyPem,
  readSignatureSector,
  signatureSectorOffset,
  signImage,
  signingKeyDigest,
  signingKeyInfo,
  verifyImageSignature,
} from '../lib/image/signature';

const SECTOR = 4096;
const BLOCK = 1216;

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

function bigLE(bytes: Buffer): bigint {
  return BigInt(`0x${Buffer.from(bytes).reverse().toString('hex') || '0'}`);
}

/** A copy with one byte changed and, when it lies in a block, the block's CRC recomputed. */
function withByte(file: Buffer, at: number, value: number, blockAt?: number): Buffer {
  const copy = Buffer.from(file);
  copy[at] = value;
  if (blockAt !== undefined) copy.writeUInt32LE(crc32(copy.subarray(blockAt, blockAt + 1196)), blockAt + 1196);
  return copy;
}

function ecKey(namedCurve: string): string {
  return generateKeyPairSync('ec', { namedCurve, privateKeyEncoding: { type: 'sec1', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } }).privateKey;
}

function expectInvalid(fn: () => unknown, pattern: RegExp, secret?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof BleOtaError, String(err));
    assert.equal(err.code, 'INVALID_ARGUMENT');
    assert.match(err.message, pattern);
    if (secret) {
      // No line of the key's base64 body appears in the message.
      for (const line of secret.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'))) assert.ok(!err.message.includes(line));
    }
    return true;
  });
}

describe('Secure Boot v2 signatures', function () {
  this.timeout(30_000);
  let rsa: string;
  let rsa2: string;
  let ec: string;
  let p192: string;
  let p384: string;
  let image: Buffer;
  let imageLength: number;

  before(() => {
    rsa = generateSigningKey('rsa3072');
    rsa2 = generateSigningKey('rsa3072');
    ec = generateSigningKey('ecdsa256');
    p192 = ecKey('prime192v1');
    p384 = ecKey('secp384r1');
    image = buildAppImage({ size: 20 * 1024, projectName: 'signed', version: '3.1.0', seed: 5 });
    imageLength = image.length;
  });

  describe('keys', () => {
    it('generateSigningKey writes the PEM espsecure.py writes: traditional RSA-3072 (e = 65537) or EC P-256', () => {
      assert.match(rsa, /^-----BEGIN RSA PRIVATE KEY-----\n/);
      const details = createPrivateKey(rsa).asymmetricKeyDetails;
      assert.equal(details?.modulusLength, 3072);
      assert.equal(details?.publicExponent, 65537n);
      assert.match(ec, /^-----BEGIN EC PRIVATE KEY-----\n/);
      assert.equal(createPrivateKey(ec).asymmetricKeyDetails?.namedCurve, 'prime256v1');
      assert.throws(() => generateSigningKey('rsa2048' as 'rsa3072'), /rsa3072 or ecdsa256/);
    });

    it('publicKeyPem gives SPKI PEM from a private key or any public form, with the same digest', () => {
      const pub = publicKeyPem(rsa);
      assert.match(pub, /^-----BEGIN PUBLIC KEY-----\n/);
      assert.ok(!pub.includes('PRIVATE'));
      const pkcs1Public = createPublicKey(rsa).export({ type: 'pkcs1', format: 'pem' }).toString();
      assert.match(pkcs1Public, /BEGIN RSA PUBLIC KEY/);
      const pkcs8 = createPrivateKey(rsa).export({ type: 'pkcs8', format: 'pem' }).toString();
      const ecPkcs8 = createPrivateKey(ec).export({ type: 'pkcs8', format: 'pem' }).toString();
      const digest = signingKeyDigest(rsa);
      for (const form of [pub, pkcs1Public, pkcs8]) {
        assert.ok(signingKeyDigest(form).equals(digest));
        assert.equal(publicKeyPem(form), pub);
      }
      assert.ok(signingKeyDigest(ecPkcs8).equals(signingKeyDigest(ec)));
      assert.ok(signingKeyDigest(publicKeyPem(ec)).equals(signingKeyDigest(ec)));
      // openssl ecparam -genkey puts an EC PARAMETERS block first.
      const withParams = `-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n${ec}`;
      assert.ok(signingKeyDigest(withParams).equals(signingKeyDigest(ec)));
    });

    it('signingKeyInfo tells private from public and names the scheme', () => {
      assert.deepEqual(
        [rsa, ec, p192, p384, publicKeyPem(ec)].map((k) => {
          const info = signingKeyInfo(k);
          return [info.scheme, info.isPrivate, info.keyDigest.length];
        }),
        [
          ['rsa3072', true, 32],
          ['ecdsa256', true, 32],
          ['ecdsa192', true, 32],
          ['ecdsa384', true, 32],
          ['ecdsa256', false, 32],
        ],
      );
    });

    it('refuses what Secure Boot v2 cannot use, with a message that never quotes the key', () => {
      expectInvalid(() => signingKeyDigest('hello'), /not a PEM key/);
      const rsa2048 = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
      expectInvalid(() => signingKeyDigest(rsa2048), /RSA-2048 key; Secure Boot v2 signs with RSA-3072 keys only/, rsa2048);
      const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
      expectInvalid(() => signingKeyDigest(ed), /ed25519 key/, ed);
      const k1 = ecKey('secp256k1');
      expectInvalid(() => signingKeyDigest(k1), /curve secp256k1/, k1);
      const encrypted = createPrivateKey(rsa).export({ type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
      expectInvalid(() => signingKeyDigest(encrypted), /encrypted with a passphrase/, encrypted);
      const legacyEncrypted = createPrivateKey(rsa).export({ type: 'pkcs1', format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
      expectInvalid(() => signingKeyDigest(legacyEncrypted), /encrypted with a passphrase/, legacyEncrypted);
      const damaged = rsa.replace(/\n[A-Za-z0-9+/]{20}/, '\n!!!!!!!!!!!!!!!!!!!!');
      expectInvalid(() => signingKeyDigest(damaged), /"RSA PRIVATE KEY" block cannot be read/, rsa);
      expectInvalid(() => signImage(image, publicKeyPem(rsa)), /public key; signing needs the private key/);
      expectInvalid(() => signImage(image, [rsa, 'junk']), /^Signing key 2 of 2: This is not a PEM key/);
      expectInvalid(() => signImage(image, []), /No signing key/);
    });
  });

  describe('signImage', () => {
    it('RSA: pads with 0xFF to 4 KiB and appends the sector sign_data --version 2 writes', () => {
      const signed = signImage(image, rsa);
      const at = signatureSectorOffset(imageLength);
      assert.equal(at % SECTOR, 0);
      assert.equal(signed.length, at + SECTOR);
      assert.ok(signed.subarray(0, imageLength).equals(image), 'the image is unchanged');
      assert.ok(
        signed.subarray(imageLength, at).every((b) => b === 0xff),
        'padded with 0xFF',
      );
      const block = signed.subarray(at, at + BLOCK);
      assert.deepEqual([...block.subarray(0, 4)], [0xe7, 0x02, 0, 0]);
      assert.ok(block.subarray(4, 36).equals(sha256(signed.subarray(0, at))), 'the digest covers the padded image');

      const jwk = createPublicKey(rsa).export({ format: 'jwk' });
      const n = BigInt(`0x${Buffer.from(jwk.n as string, 'base64url').toString('hex')}`);
      assert.equal(bigLE(block.subarray(36, 420)), n, 'n, little endian');
      assert.equal(block.readUInt32LE(420), 65537);
      assert.equal(bigLE(block.subarray(424, 808)), (1n << 6144n) % n, 'rinv = 2^6144 mod n');
      assert.equal((n * BigInt(block.readUInt32LE(808))) % (1n << 32n), (1n << 32n) - 1n, "n * M' = -1 mod 2^32");
      const signature = Buffer.from(block.subarray(812, 1196)).reverse();
      const pss = { key: createPublicKey(rsa), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 };
      assert.ok(cryptoVerify('sha256', signed.subarray(0, at), pss, signature), 'RSA-PSS, SHA-256, salt 32, over the padded image');
      assert.equal(block.readUInt32LE(1196), crc32(block.subarray(0, 1196)));
      assert.ok(
        block.subarray(1200).every((b) => b === 0),
        '16 zero bytes',
      );
      assert.ok(
        signed.subarray(at + BLOCK).every((b) => b === 0xff),
        'the rest of the sector is 0xFF',
      );
      assert.ok(sha256(block.subarray(36, 812)).equals(signingKeyDigest(rsa)), "the key digest covers n, e, rinv, M'");
    });

    it('ECDSA P-256: curve id, point and r||s little endian, zero-filled to the RSA block size', () => {
      const signed = signImage(image, ec);
      const at = signatureSectorOffset(imageLength);
      const block = signed.subarray(at, at + BLOCK);
      assert.deepEqual([...block.subarray(0, 4)], [0xe7, 0x03, 0x00, 0]);
      assert.ok(block.subarray(4, 36).equals(sha256(signed.subarray(0, at))));
      assert.equal(block[36], 2, 'curve id 2: P-256');
      const jwk = createPublicKey(ec).export({ format: 'jwk' });
      assert.ok(
        Buffer.from(block.subarray(37, 69))
          .reverse()
          .equals(Buffer.from(jwk.x as string, 'base64url')),
        'X',
      );
      assert.ok(
        Buffer.from(block.subarray(69, 101))
          .reverse()
          .equals(Buffer.from(jwk.y as string, 'base64url')),
        'Y',
      );
      const rs = Buffer.concat([Buffer.from(block.subarray(101, 133)).reverse(), Buffer.from(block.subarray(133, 165)).reverse()]);
      assert.ok(cryptoVerify('sha256', signed.subarray(0, at), { key: createPublicKey(ec), dsaEncoding: 'ieee-p1363' }, rs));
      assert.ok(block.subarray(165, 1196).every((b) => b === 0));
      assert.equal(block.readUInt32LE(1196), crc32(block.subarray(0, 1196)));
      assert.ok(sha256(block.subarray(36, 101)).equals(signingKeyDigest(ec)), 'the key digest covers curve id and point');
    });

    it('ECDSA P-192 keeps X and Y in the 64-byte field; P-384 uses SHA-384 and the shifted layout', () => {
      const at = signatureSectorOffset(imageLength);
      const small = signImage(image, p192).subarray(at, at + BLOCK);
      assert.deepEqual([...small.subarray(0, 4)], [0xe7, 0x03, 0x00, 0]);
      assert.equal(small[36], 1);
      const der = createPublicKey(p192).export({ type: 'spki', format: 'der' });
      const point = der.subarray(der.length - 48);
      assert.ok(Buffer.from(small.subarray(37, 61)).reverse().equals(point.subarray(0, 24)), 'X at 37');
      assert.ok(Buffer.from(small.subarray(61, 85)).reverse().equals(point.subarray(24)), 'Y at 61');
      assert.ok(
        small.subarray(85, 101).every((b) => b === 0),
        'zero-filled to 64 bytes',
      );
      assert.ok(
        small.subarray(149, 165).every((b) => b === 0),
        'r||s zero-filled to 64 bytes',
      );
      const big = signImage(image, p384);
      const block = big.subarray(at, at + BLOCK);
      assert.deepEqual([...block.subarray(0, 4)], [0xe7, 0x03, 0x01, 0]);
      assert.ok(block.subarray(4, 52).equals(createHash('sha384').update(big.subarray(0, at)).digest()));
      assert.equal(block[52], 3);
      assert.ok(sha256(block.subarray(52, 149)).equals(signingKeyDigest(p384)));
    });

    it('signs an image already a multiple of 4 KiB without padding, and one block per key', () => {
      const aligned = Buffer.concat([image, Buffer.alloc(signatureSectorOffset(imageLength) - imageLength, 0xff)]);
      const signed = signImage(aligned, [rsa, ec, rsa2]);
      assert.equal(signed.length, aligned.length + SECTOR);
      const sector = readSignatureSector(signed, imageLength);
      assert.deepEqual(
        sector.blocks.map((b) => [b.index, b.scheme, b.keyDigest.toString('hex')]),
        [
          [0, 'rsa3072', signingKeyDigest(rsa).toString('hex')],
          [1, 'ecdsa256', signingKeyDigest(ec).toString('hex')],
          [2, 'rsa3072', signingKeyDigest(rsa2).toString('hex')],
        ],
      );
      expectInvalid(() => signImage(image, [rsa, ec, rsa2, p192]), /holds 3 blocks/);
    });

    it('append keeps the blocks there are, byte for byte, and signs the same contents', () => {
      const once = signImage(image, rsa);
      const twice = signImage(once, ec, { append: true });
      assert.equal(twice.length, once.length);
      const at = signatureSectorOffset(imageLength);
      assert.ok(twice.subarray(0, at + BLOCK).equals(once.subarray(0, at + BLOCK)), 'contents and block 0 unchanged');
      const sector = readSignatureSector(twice, imageLength);
      assert.deepEqual(
        sector.blocks.map((b) => b.scheme),
        ['rsa3072', 'ecdsa256'],
      );
      assert.ok(sector.blocks[1].imageDigest.equals(sector.blocks[0].imageDigest), 'both sign the same digest');
      const full = signImage(twice, rsa2, { append: true });
      assert.equal(readSignatureSector(full, imageLength).blocks.length, 3);
      expectInvalid(() => signImage(full, p192, { append: true }), /no more signature fits/);
      expectInvalid(() => signImage(twice, [rsa2, p192], { append: true }), /at most 1 more fit/);
    });

    it('as espsecure.py: append on an unsigned file signs afresh; no append on a signed file signs it whole', () => {
      assert.ok(signImage(image, rsa, { append: true }).subarray(0, imageLength).equals(image));
      const once = signImage(image, rsa);
      const again = signImage(once, ec);
      assert.equal(again.length, once.length + SECTOR, 'a second sector after the first');
      assert.deepEqual(
        readSignatureSector(again, imageLength).blocks.map((b) => b.scheme),
        ['rsa3072'],
        'the device still sees the first',
      );
    });

    it('buildAppImage({ signingKeys }) makes a signed image whose block the parser reports with its key digest', () => {
      const signed = buildAppImage({ size: 20 * 1024, seed: 5, projectName: 'signed', version: '3.1.0', signingKeys: [ec, rsa] });
      const parsed = parseEspImage(signed);
      assert.equal(parsed.imageLength, imageLength);
      assert.equal(parsed.signature?.blockCount, 2);
      assert.equal(parsed.signature?.version, 3);
      assert.equal(parsed.signature?.scheme, 'ecdsa256');
      assert.ok(parsed.signature?.keyDigest.equals(signingKeyDigest(ec)));
      assert.ok(verifyImageSignature(signed, parsed.imageLength, { publicKeyPem: publicKeyPem(ec) }).ok);
      assert.ok(buildAppImage({ size: 20 * 1024, seed: 5, projectName: 'signed', version: '3.1.0', signingKeys: [] }).equals(image));
    });
  });

  describe('readSignatureSector', () => {
    it('lists the valid blocks with slot, scheme, stored digest and key digest', () => {
      const signed = signImage(image, [rsa, p384]);
      const sector = readSignatureSector(signed, imageLength);
      assert.equal(sector.offset, signatureSectorOffset(imageLength));
      const contents = signed.subarray(0, sector.offset);
      assert.deepEqual(sector.blocks, [
        { index: 0, scheme: 'rsa3072', imageDigest: sha256(contents), keyDigest: signingKeyDigest(rsa) },
        { index: 1, scheme: 'ecdsa384', imageDigest: createHash('sha384').update(contents).digest(), keyDigest: signingKeyDigest(p384) },
      ]);
      assert.deepEqual(readSignatureSector(image, imageLength), { offset: sector.offset, blocks: [] });
    });

    it('skips damaged slots: a bad CRC, an unknown version or curve', () => {
      const signed = signImage(image, [rsa, ec]);
      const at = signatureSectorOffset(imageLength);
      assert.deepEqual(
        readSignatureSector(withByte(signed, at + 50, signed[at + 50] ^ 1), imageLength).blocks.map((b) => b.index),
        [1],
      );
      assert.deepEqual(
        readSignatureSector(withByte(signed, at + BLOCK + 1, 0x04, at + BLOCK), imageLength).blocks.map((b) => b.index),
        [0],
      );
      assert.deepEqual(
        readSignatureSector(withByte(signed, at + BLOCK + 36, 9, at + BLOCK), imageLength).blocks.map((b) => b.index),
        [0],
      );
      assert.throws(() => readSignatureSector(image, image.length + 1), /imageLength/);
    });
  });

  describe('verifyImageSignature', () => {
    it('accepts block 0 signed by the trusted key, named by its PEM or its digest', () => {
      for (const key of [rsa, ec, p192, p384]) {
        const signed = signImage(image, key);
        const info = signingKeyInfo(key);
        const expected = { ok: true, index: 0, scheme: info.scheme, keyDigest: info.keyDigest };
        assert.deepEqual(verifyImageSignature(signed, imageLength, { publicKeyPem: publicKeyPem(key) }), expected);
        assert.deepEqual(verifyImageSignature(signed, imageLength, { publicKeyPem: key }), expected);
        assert.deepEqual(verifyImageSignature(signed, imageLength, { keyDigest: info.keyDigest }), expected);
      }
    });

    it('unsigned: no valid block, or (by default) no valid block 0', () => {
      const none = verifyImageSignature(image, imageLength, { publicKeyPem: rsa });
      assert.equal(none.ok, false);
      assert.equal(!none.ok && none.reason, 'unsigned');
      assert.match(!none.ok ? none.message : '', /no valid Secure Boot v2 signature block in the signature sector at 0x/);

      const signed = signImage(image, [rsa2, rsa]);
      const at = signatureSectorOffset(imageLength);
      const noBlock0 = withByte(signed, at, 0x00);
      const result = verifyImageSignature(noBlock0, imageLength, { publicKeyPem: rsa });
      assert.equal(!result.ok && result.reason, 'unsigned');
      assert.match(!result.ok ? result.message : '', /block 0 .* is missing or damaged \(valid: block 1\); ESP-IDF's update check reads block 0 only/);
      assert.deepEqual(verifyImageSignature(noBlock0, imageLength, { publicKeyPem: rsa }, { anyBlock: true }), {
        ok: true,
        index: 1,
        scheme: 'rsa3072',
        keyDigest: signingKeyDigest(rsa),
      });
    });

    it('untrusted: block 0 is made with another key, and says which', () => {
      const signed = signImage(image, [rsa2, rsa]);
      const result = verifyImageSignature(signed, imageLength, { publicKeyPem: publicKeyPem(rsa) });
      assert.ok(!result.ok && result.reason === 'untrusted');
      assert.equal(result.index, 0);
      assert.ok(result.keyDigest.equals(signingKeyDigest(rsa2)));
      assert.ok(result.trustedKeyDigest.equals(signingKeyDigest(rsa)));
      assert.ok(result.message.includes(signingKeyDigest(rsa2).toString('hex')));
      assert.ok(result.message.includes(signingKeyDigest(rsa).toString('hex')));
      // Any block: block 1 carries the trusted key.
      assert.equal(verifyImageSignature(signed, imageLength, { publicKeyPem: rsa }, { anyBlock: true }).ok, true);
      const other = verifyImageSignature(signed, imageLength, { publicKeyPem: ec }, { anyBlock: true });
      assert.ok(!other.ok && other.reason === 'untrusted');
      assert.match(other.message, /No signature block is made with the trusted key .*block 0 names key .*, block 1 names key/);
    });

    it('digest-mismatch: a changed image, or changed padding before the sector', () => {
      const signed = signImage(image, ec);
      const changed = withByte(signed, 100, signed[100] ^ 0x20);
      const result = verifyImageSignature(changed, imageLength, { publicKeyPem: ec });
      assert.ok(!result.ok && result.reason === 'digest-mismatch');
      assert.ok(result.signedDigest.equals(sha256(signed.subarray(0, signatureSectorOffset(imageLength)))));
      assert.ok(result.imageDigest.equals(sha256(changed.subarray(0, signatureSectorOffset(imageLength)))));
      assert.match(result.message, /^The image changed after it was signed/);
      const repadded = withByte(signed, imageLength + 3, 0x00);
      const padding = verifyImageSignature(repadded, imageLength, { publicKeyPem: ec });
      assert.ok(!padding.ok && padding.reason === 'digest-mismatch');
      assert.match(padding.message, /^The padding between the image and its signature sector changed after signing/);
    });

    it('bad-signature: right key and digest, a signature that does not verify (CRC made to match)', () => {
      const at = signatureSectorOffset(imageLength);
      for (const [key, sigAt] of [
        [rsa, 812],
        [ec, 101],
        [p384, 149],
      ] as const) {
        const signed = signImage(image, key);
        const forged = withByte(signed, at + sigAt + 5, signed[at + sigAt + 5] ^ 0x01, at);
        const result = verifyImageSignature(forged, imageLength, { publicKeyPem: key });
        assert.ok(!result.ok && result.reason === 'bad-signature', JSON.stringify(result));
        assert.match(result.message, /signature does not verify: the block is damaged or forged/);
      }
    });

    it('needs exactly one trusted key', () => {
      const signed = signImage(image, rsa);
      expectInvalid(() => verifyImageSignature(signed, imageLength, {}), /No trusted key/);
      expectInvalid(() => verifyImageSignature(signed, imageLength, { publicKeyPem: rsa, keyDigest: signingKeyDigest(ec) }), /different keys/);
      expectInvalid(() => verifyImageSignature(signed, imageLength, { keyDigest: Buffer.alloc(16) }), /32-byte/);
      assert.equal(verifyImageSignature(signed, imageLength, { publicKeyPem: rsa, keyDigest: signingKeyDigest(rsa) }).ok, true);
    });
  });
});
