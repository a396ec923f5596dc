// A spec file with no tests at all, as left behind when every test is commented out.
describe('nothing here yet', function () {});
