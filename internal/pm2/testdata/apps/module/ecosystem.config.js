// A .js file in a package of "type": "module" is an ES module.
export default { apps: [{ name: 'typed', script: '../server.js' }] };
