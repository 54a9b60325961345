// Builds static/plotly-explorer.min.js: plotly.js with only the trace types the app's pages draw.
// st.plotly_chart loads the whole of plotly.js (4.8 MB) before it draws a figure; this bundle is 1.6 MB, and
// a page's first figure comes 0.5-1 s sooner in a new tab on 2 cores (README, "How live the app feels").
//
//   cd scripts/plotly_bundle && npm ci && npm run build
//
// The versions are pinned in package.json and package-lock.json; plotly.js is the version plotly.py ships
// (the notebooks draw with it). The esbuild settings are plotly.js's own (its esbuild-config.js). After
// adding a trace type here, add it to BUNDLE_TRACES in app_pages/chart.py (tests/test_chart.py compares the two).
const path = require('path');
const esbuild = require('esbuild');
const { environmentPlugin } = require('esbuild-plugin-environment');
const { glsl } = require('esbuild-plugin-glsl');
const InlineCSSPlugin = require('esbuild-plugin-inline-css');

const TRACES = ['scatter', 'scattergl', 'heatmap', 'histogram', 'bar', 'contour', 'table'];
const OUT = path.join(__dirname, '..', '..', 'static', 'plotly-explorer.min.js');
const version = require('plotly.js/package.json').version;

const entry = [
  "var Plotly = require('plotly.js/lib/core');",
  `Plotly.register([${TRACES.filter(t => t !== 'scatter').map(t => `require('plotly.js/lib/${t}')`).join(', ')}]);`,
  'module.exports = Plotly;',
].join('\n');

esbuild.build({
  stdin: { contents: entry, resolveDir: __dirname, sourcefile: 'entry.js' },
  outfile: OUT,
  banner: { js: `/* plotly.js v${version} (MIT license), traces: ${TRACES.join(', ')}. Built by scripts/plotly_bundle. */` },
  format: 'iife', globalName: 'Plotly', bundle: true, minify: true, sourcemap: false,
  plugins: [InlineCSSPlugin(), glsl({ minify: true }), environmentPlugin({ NODE_DEBUG: false })],
  alias: { regl: '@plotly/regl', stream: 'stream-browserify' },
  define: { global: 'window', 'define.amd': 'false' },
  target: 'es2016', logLevel: 'warning',
}).then(() => console.log(`wrote ${OUT}`)).catch(() => process.exit(1));
