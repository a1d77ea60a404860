import { strict as assert } from 'node:assert';
import { compareVersions } from '../lib/image/version';

describe('app version comparison (downgrade protection)', () => {
  const older: Array<[string, string]> = [
    ['1.4.1', '1.4.2'],
    ['1.4', '1.4.1'],
    ['v1.9.9', '2.0.0'],
    ['2.0.0-rc1', '2.0.0'],
    ['1.2.3', '1.2.3-4-gabc1234'],
    ['1.10.0', '1.11.0'],
    ['1.9.0', '1.10.0'],
  ];
  for (const [a, b] of older) {
    it(`${a} is older than ${b}`, () => {
      assert.equal(compareVersions(a, b), -1);
      assert.equal(compareVersions(b, a), 1);
    });
  }

  it('equal versions compare equal, with or without a leading v', () => {
    assert.equal(compareVersions('v1.2.0', '1.2'), 0);
  });

  it('versions without numbers cannot be compared', () => {
    assert.equal(compareVersions('main', '1.0.0'), undefined);
    assert.equal(compareVersions('1.0.0', 'qa-build'), undefined);
  });
});
