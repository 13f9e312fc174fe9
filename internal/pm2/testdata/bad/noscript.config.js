module.exports = { apps: [{ name: "x" }] };
