export default {
  apps: [{ script: 'a.js' oops }]
}
