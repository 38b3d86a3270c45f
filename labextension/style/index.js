import './base.css';
import './kernelview.css';
