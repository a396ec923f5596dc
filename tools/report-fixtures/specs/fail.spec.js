const assert = require('assert');

describe('checkout', function () {
  it('adds an item to the cart', function () {
    assert.ok(true);
  });
  it('computes the total', function () {
    assert.strictEqual(2 + 2, 5, 'total should be 5');
  });
});
