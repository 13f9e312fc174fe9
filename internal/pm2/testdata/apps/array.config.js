// module.exports may be the list of apps itself.
module.exports = [{ name: 'a', script: 'server.js' }, { name: 'b', script: 'worker.js' }];
