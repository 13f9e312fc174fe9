module.exports = {
  apps: [{
    name: 'x'
    script: 'server.js'
  }]
}
