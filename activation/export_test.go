package activation

// InheritFrom is Inherit with the sockets from descriptor first on, for
// the tests of package activation_test.
var InheritFrom = inherit
