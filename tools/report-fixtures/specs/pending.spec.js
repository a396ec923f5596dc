describe('reports page', function () {
  it('exports a CSV');
  it.skip('exports a PDF', function () {});
});
